"""Flagging: embed a sample and raise near-duplicate and hallucination flags with evidence."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from pgvector.django import CosineDistance

from curation import embedder
from curation.models import Flag, Sample, SourcePassage
from curation.similarity import Support, hallucination_score, novelty, sentence_support, split_sentences

log = logging.getLogger(__name__)

DETECTOR_VERSION = "skeleton-1"


def sample_flag_later(*, sample_id: int) -> None:
    """Queue flagging for after the surrounding transaction commits."""
    from curation.tasks import flag_sample

    transaction.on_commit(lambda: flag_sample.delay(sample_id))


def passages_embed_missing(*, lineage_id: int) -> int:
    """Embed the lineage's source passages that have no embedding yet; returns how many."""
    missing = list(SourcePassage.objects.filter(lineage_id=lineage_id, embedding__isnull=True).only("id", "text"))
    if not missing:
        return 0
    vectors = embedder.embed([p.text for p in missing])
    for passage, vector in zip(missing, vectors):
        passage.embedding = vector
    SourcePassage.objects.bulk_update(missing, ["embedding"], batch_size=200)
    return len(missing)


def sample_text(sample: Sample) -> str:
    """What near-duplicate search compares: the question and its answer together."""
    return f"{sample.question}\n{sample.answer}"


def _nearest_earlier_sample(sample: Sample, vector) -> tuple[Sample | None, float | None]:
    neighbour = (
        Sample.objects.filter(lineage_id=sample.lineage_id, embedding__isnull=False, id__lt=sample.id)
        .annotate(distance=CosineDistance("embedding", vector))
        .order_by("distance")
        .only("id", "question", "answer", "status")
        .first()
    )
    if neighbour is None:
        return None, None
    return neighbour, 1.0 - float(neighbour.distance)


def _best_passages(lineage_id: int, sentence_vecs) -> list[tuple[SourcePassage, float]]:
    """For each sentence vector, the closest source passage of the lineage (pgvector HNSW)."""
    best = []
    for vector in sentence_vecs:
        passage = (
            SourcePassage.objects.filter(lineage_id=lineage_id, embedding__isnull=False)
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance")
            .only("id", "title", "text")
            .first()
        )
        best.append((passage, 1.0 - float(passage.distance)) if passage else (None, 0.0))
    return best


def sample_flag(*, sample_id: int) -> list[Flag]:
    """Embed the sample and (re)compute its flags. Running it twice gives the same result.

    1. Make sure the lineage's source passages are embedded.
    2. Embed the sample (question + answer) and each sentence of the answer in one batch.
    3. Near-duplicate: the nearest earlier sample of the lineage by cosine; flagged
       at or above the lineage's duplicate threshold.
    4. Hallucination: each answer sentence's best source passage; sentences below
       the grounding threshold are unsupported, and any unsupported sentence flags.
    5. Store flags, embedding and novelty in one transaction.
    """
    sample = Sample.objects.select_related("lineage").get(pk=sample_id)
    lineage = sample.lineage
    passages_embed_missing(lineage_id=lineage.pk)

    sentences = split_sentences(sample.answer) or [sample.answer]
    vectors = embedder.embed([sample_text(sample), *sentences])
    sample_vec, sentence_vecs = vectors[0], vectors[1:]

    duplicate, similarity = _nearest_earlier_sample(sample, sample_vec)
    best = _best_passages(lineage.pk, sentence_vecs)
    supports = [Support(s, score, passage.pk if passage else -1) for s, (passage, score) in zip(sentences, best)]
    raised: list[Flag] = []
    if duplicate is not None and similarity >= lineage.duplicate_threshold:
        raised.append(
            Flag(
                sample=sample,
                kind=Flag.Kind.NEAR_DUPLICATE,
                score=round(similarity, 4),
                evidence={
                    "duplicate_id": duplicate.pk,
                    "similarity": round(similarity, 4),
                    "duplicate_question": duplicate.question,
                    "duplicate_answer": duplicate.answer,
                    "duplicate_status": duplicate.status,
                    "threshold": lineage.duplicate_threshold,
                },
                detector_version=DETECTOR_VERSION,
            )
        )
    unsupported = [
        {
            "sentence": support.sentence,
            "support": round(support.score, 4),
            "passage_id": passage.pk if passage else None,
            "passage_title": passage.title if passage else "",
            "passage_text": passage.text if passage else "",
        }
        for support, (passage, _) in zip(supports, best)
        if support.score < lineage.grounding_threshold
    ]
    if unsupported:
        raised.append(
            Flag(
                sample=sample,
                kind=Flag.Kind.HALLUCINATION,
                score=round(hallucination_score(supports), 4),
                evidence={
                    "unsupported": unsupported,
                    "sentences": [{"sentence": s.sentence, "support": round(s.score, 4)} for s in supports],
                    "threshold": lineage.grounding_threshold,
                },
                detector_version=DETECTOR_VERSION,
            )
        )

    with transaction.atomic():
        Flag.objects.filter(sample=sample).exclude(kind__in=[f.kind for f in raised]).delete()
        stored = []
        for flag in raised:
            obj, _ = Flag.objects.update_or_create(
                sample=sample,
                kind=flag.kind,
                defaults={"score": flag.score, "evidence": flag.evidence, "detector_version": flag.detector_version},
            )
            stored.append(obj)
        Sample.objects.filter(pk=sample.pk).update(
            embedding=sample_vec, novelty=novelty(similarity), flagged_at=timezone.now()
        )
    return stored


def samples_flag_missing(*, limit: int = 500) -> list[int]:
    """Queue flagging for samples that never got flags (a lost message, a dead worker)."""
    ids = list(
        Sample.objects.filter(flagged_at__isnull=True, created_at__lt=timezone.now() - timedelta(minutes=2))
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    for sample_id in ids:
        with transaction.atomic():
            sample_flag_later(sample_id=sample_id)
    return ids
