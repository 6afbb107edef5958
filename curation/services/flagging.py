"""Flagging: embed samples, find their near-duplicates and score their sentences for hallucination.

The scoring itself lives in `curation.detectors` (no database); this module
fetches what it needs with pgvector and stores the results. Running it twice
on a sample gives the same flags once: samples are compared only with what
came before them (lower ids), so re-flagging a lineage in id order reproduces
what flagging it live produced.

Samples are flagged in batches (`samples_flag`): a flag task takes its sample
and the lineage's other pending ones (`samples_flag_pending`), a re-flag job
a chunk. A batch costs one encode call for all its texts and one set-based
query per look-up (nearest earlier samples, MinHash candidates, nearest real
passage, top-k grounding chunks of every sentence), whatever its size.

Two workers flagging copies of one text at the same moment find each other:
embeddings and MinHash signatures are stored and committed *before* anyone
looks (step 3 of `samples_flag`), and a batch also stores those of the earlier
samples still waiting for theirs, so whichever of two copies is later always
sees the earlier one.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from curation import detectors, embedder, lexical, selectors
from curation.hallucination import Reference, answer_sentences, chunk_passage
from curation.signals import checks
from curation.models import DuplicateCluster, Flag, Lineage, PassageChunk, Sample, SourcePassage
from curation.similarity import novelty

log = logging.getLogger(__name__)

DETECTOR_VERSION = f"{detectors.DUPLICATE_VERSION}+{detectors.HALLUCINATION_VERSION}"

# Session advisory-lock keys (the one-bigint form; curation.services.lineages uses the two-int form):
# a flag batch holds CLAIM_KEY + sample id for each of its samples, an embedder of a lineage's passages
# EMBED_KEY + lineage id. A dead worker's locks go with its connection.
CLAIM_KEY = 0x464C4147 << 32  # "FLAG"
EMBED_KEY = 0x454D4244 << 32  # "EMBD"


class PassagesPending(Exception):
    """The lineage has more passages waiting to be embedded than a flag task embeds itself."""

    def __init__(self, lineage_id: int, count: int):
        self.lineage_id, self.count = lineage_id, count
        super().__init__(f"lineage {lineage_id} has {count} or more passages still to embed")


def sample_flag_later(*, sample_id: int) -> None:
    """Queue flagging for after the surrounding transaction commits.

    `robust`: a broker outage must not stop the generation that stored the
    sample; the message is lost (the error is logged) and the sweep
    `samples_flag_missing` queues the sample again once the broker is back.
    """
    from curation.tasks import flag_sample

    transaction.on_commit(lambda: flag_sample.delay(sample_id), robust=True)


# ----------------------------------------------------------------------------- passages


def passages_embed_missing(*, lineage_id: int, limit: int | None = None) -> int:
    """Embed the lineage's passages that have no embedding yet and cut them into chunks; returns how many.

    `limit` bounds the passages taken (of each kind) in one call, so that a big
    import is embedded a chunk per task (`curation.embed_passages`).
    Two workers may do this at once: chunks are unique per (passage, position)
    and inserted with ignore_conflicts, embeddings are the same either way.
    """
    missing = list(SourcePassage.objects.filter(lineage_id=lineage_id, embedding__isnull=True)
                   .only("id", "text").order_by("id")[:limit])
    unchunked = list(
        SourcePassage.objects.filter(lineage_id=lineage_id, chunks__isnull=True).only("id", "text", "lineage_id")
        .order_by("id")[:limit]
    )
    if not missing and not unchunked:
        return 0
    chunk_texts = [(p, n, text) for p in unchunked for n, text in enumerate(chunk_passage(p.text))]
    vectors = embedder.embed([p.text for p in missing] + [text for _, _, text in chunk_texts])
    for passage, vector in zip(missing, vectors):
        passage.embedding = vector
    with transaction.atomic():
        SourcePassage.objects.bulk_update(missing, ["embedding"], batch_size=200)
        PassageChunk.objects.bulk_create(
            [PassageChunk(lineage_id=lineage_id, passage=p, position=n, text=text, embedding=vector)
             for (p, n, text), vector in zip(chunk_texts, vectors[len(missing) :])],
            batch_size=500,
            ignore_conflicts=True,
        )
    return len(missing)


def passages_embed_chunk(*, lineage_id: int) -> tuple[int, bool]:
    """One chunk of `curation.embed_passages`: (passages embedded, whether more remain for this task to queue).

    One embedder per lineage at a time (a session advisory lock): a second
    chain of tasks (an import's and a waiting flag task's) ends at once
    instead of embedding the same passages twice; the holder's chain goes on.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [EMBED_KEY + lineage_id])
        if not cursor.fetchone()[0]:
            return 0, False
    try:
        done = passages_embed_missing(lineage_id=lineage_id, limit=settings.OUROBOROS["PASSAGE_EMBED_CHUNK_SIZE"])
        return done, passages_embedding_pending(lineage_id=lineage_id)
    finally:
        _unlock([EMBED_KEY + lineage_id])


def passages_embedding_running(*, lineage_id: int) -> bool:
    """Whether some worker is embedding the lineage's passages right now (holds the embed lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                       "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s)",
                       [EMBED_KEY + lineage_id])
        return cursor.fetchone()[0]


def passages_embedding_pending(*, lineage_id: int) -> bool:
    """Whether the lineage has passages still to embed or to cut into chunks."""
    passages = SourcePassage.objects.filter(lineage_id=lineage_id)
    return passages.filter(embedding__isnull=True).exists() or passages.filter(chunks__isnull=True).exists()


def _passages_ready(lineage_id: int, *, partial_corpus: bool) -> int:
    """Make sure the lineage's corpus is embedded before its samples are grounded in it.

    A small backlog (a new lineage's few passages, at most FLAG_INLINE_PASSAGES)
    is embedded here; a bigger one is the chunked `embed_passages` task's work,
    and flagging raises PassagesPending (the task waits and tries again)
    unless `partial_corpus`, when it grounds in what is there. Returns how many
    passages (at least) the flags were computed without.
    """
    inline = settings.OUROBOROS["FLAG_INLINE_PASSAGES"]
    backlog = SourcePassage.objects.filter(lineage_id=lineage_id, embedding__isnull=True).values("id")
    count = len(backlog[: inline + 1])
    if count == 0:
        return 0
    if count <= inline:
        passages_embed_missing(lineage_id=lineage_id, limit=inline)
        return 0
    if not partial_corpus:
        raise PassagesPending(lineage_id, count)
    return count


def sample_waited_for_passages(*, sample_id: int) -> bool:
    """Whether the sample has waited FLAG_PASSAGE_WAIT_SECONDS for its lineage's passages (then it is
    flagged with what is there, rather than not at all)."""
    created = Sample.objects.values_list("created_at", flat=True).get(pk=sample_id)
    return timezone.now() - created >= timedelta(seconds=settings.OUROBOROS["FLAG_PASSAGE_WAIT_SECONDS"])


# ----------------------------------------------------------------------------- claims


def _unlock(keys: list[int]) -> None:
    if not keys:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", [keys])
    except Exception:
        # A lock we cannot release must not outlive this task on a kept connection: closing it releases all.
        log.exception("could not release advisory locks; closing the connection")
        connection.close()


def _try_claim(ids: list[int]) -> list[int]:
    """Take the flag claim of each sample nobody holds; returns the ids taken, in id order."""
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM unnest(%s::bigint[]) AS id WHERE pg_try_advisory_lock(%s + id) ORDER BY id",
                       [sorted(ids), CLAIM_KEY])
        return [row[0] for row in cursor.fetchall()]


def samples_flag_pending(*, sample_id: int, partial_corpus: bool = False) -> int:
    """The flag task's work: the sample and up to FLAG_BATCH_SIZE − 1 other pending samples of its lineage.

    1. Claim the sample (a session advisory lock); held by another worker's
       batch, or flagged already: nothing to do.
    2. Claim the lineage's oldest other pending samples that nobody holds.
    3. Flag them as one batch (`samples_flag`), then release the claims.
    A worker that dies loses its connection and with it its claims; the
    samples are still unflagged and the sweep `samples_flag_missing` queues them.
    Returns how many samples were flagged.
    """
    sample = Sample.objects.only("id", "lineage_id", "flagged_at").get(pk=sample_id)
    if sample.flagged_at is not None:
        return 0
    claimed = _try_claim([sample.pk])
    if not claimed:
        return 0
    try:
        size = settings.OUROBOROS["FLAG_BATCH_SIZE"]
        if size > 1:
            pending = list(
                Sample.objects.filter(lineage_id=sample.lineage_id, status=Sample.Status.PENDING,
                                      flagged_at__isnull=True).exclude(pk=sample.pk)
                .order_by("id").values_list("id", flat=True)[: 2 * size]
            )
            others = _try_claim(pending)
            _unlock([CLAIM_KEY + pk for pk in others[size - 1 :]])
            claimed += others[: size - 1]
        # A batch that committed just before we claimed has flagged some of them already.
        ids = list(Sample.objects.filter(pk__in=claimed, flagged_at__isnull=True).values_list("id", flat=True))
        return samples_flag(sample_ids=ids, partial_corpus=partial_corpus) if ids else 0
    finally:
        _unlock([CLAIM_KEY + pk for pk in claimed])


# ----------------------------------------------------------------------------- one batch


@dataclass
class _Item:
    """One sample of a batch with its texts and what the look-ups found for it."""

    sample: Sample
    dup_text: str
    sentences: list[str]
    alternatives: list[str]
    vector: np.ndarray | None = None
    sentence_vecs: np.ndarray | None = None
    signature: list[int] | None = None
    neighbours: dict | None = None
    candidates: list[list[Reference]] | None = None
    parent_texts: list[str] | None = None  # sentence windows of the parent's question + answer (seeding)
    parent_refs: list[Reference] | None = None
    fitted: dict = field(default_factory=dict)  # the lineage's own models in force, by kind (services.lineage_fit)


def _texts(sample: Sample) -> tuple[str, list[str], list[str]]:
    alternatives = [a for a in (sample.alt_answers or []) if isinstance(a, str) and a.strip()]
    return (detectors.duplicate_text(sample.question, sample.answer), answer_sentences(sample.answer),
            [s for a in alternatives for s in answer_sentences(a)])


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def _array_text(values: list[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _store_signatures(rows: list[tuple[int, np.ndarray, list[int], bool]]) -> None:
    """Step 3: write (id, embedding, MinHash, own) in one statement, committed before anyone looks.

    `own`: a sample of the batch, always written (a re-flag after a model
    change re-embeds it); otherwise an earlier sample still without an
    embedding, written only if nobody has in the meantime (the same values).
    """
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Sample._meta.db_table} AS s
                SET embedding = v.embedding::vector, minhash = v.minhash::bigint[], minhash_bands = v.bands::bigint[]
                FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::boolean[])
                     AS v(id, embedding, minhash, bands, own)
                WHERE s.id = v.id AND (v.own OR s.embedding IS NULL)""",
            [[r[0] for r in rows], [_vector_text(r[1]) for r in rows], [_array_text(r[2]) for r in rows],
             [_array_text(lexical.minhash_bands(r[2])) for r in rows], [r[3] for r in rows]],
        )


def _hnsw_settings() -> None:
    """Search breadth for this transaction's HNSW scans.

    `iterative_scan` (pgvector ≥ 0.8) keeps scanning the index when a filter
    (this lineage, earlier ids) removes candidates, instead of returning fewer
    than asked; strict order keeps the nearest first.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [settings.OUROBOROS["HNSW_EF_SEARCH"]])
        cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")


# The look-ups are one statement per kind for the whole batch: a UNION ALL with one branch per
# sample (or sentence), each with its query vector as a constant. A LATERAL join over the batch
# would be one plan for all, but PostgreSQL then cannot cost pgvector's HNSW index with a vector
# that is a join parameter, and chose an exact scan of the lineage; each branch with a constant
# is planned like a single look-up and walks the index.

# Sample q's nearest earlier sample of its job (a), of its lineage (b), and nearest real passage (c).
_NEAREST_BRANCH = {
    "batch": """(SELECT %s::bigint AS q, 'batch' AS scope, s.id, s.embedding <=> %s::vector AS distance
                FROM {sample} s WHERE s.job_id = %s AND s.id < %s AND s.embedding IS NOT NULL
                ORDER BY distance, s.id LIMIT 1)""",
    "lineage": """(SELECT %s::bigint AS q, 'lineage' AS scope, s.id, s.embedding <=> %s::vector AS distance
                  FROM {sample} s WHERE s.lineage_id = %s AND s.id < %s AND s.embedding IS NOT NULL
                  ORDER BY distance LIMIT 1)""",
    "real": """(SELECT %s::bigint AS q, 'real' AS scope, p.id, p.embedding <=> %s::vector AS distance
               FROM {passage} p WHERE p.lineage_id = %s AND p.embedding IS NOT NULL
               ORDER BY distance LIMIT 1)""",
}

# Sample q's best MinHash candidate among earlier samples of its lineage. Candidates are bounded:
# at most FLAG_MINHASH_CANDIDATES rows sharing a band key with q (the GIN index's bitmap, read
# until the LIMIT), ranked by band overlap, then by the estimated Jaccard. In a collapsing lineage
# where 10^4 copies share every band, one more copy still reads that many rows, not 10^4.
_MINHASH_BRANCH = """(
    SELECT %s::bigint AS q, c.id,
           (SELECT count(*) FROM unnest(c.minhash, %s::bigint[]) AS pair(a, b) WHERE a = b)::float8
               / {num_perm} AS jaccard,
           1 - (c.embedding <=> %s::vector) AS cosine
    FROM (SELECT s.id, s.minhash, s.minhash_bands, s.embedding FROM {sample} s
          WHERE s.lineage_id = %s AND s.id < %s AND s.minhash_bands && %s::bigint[]
          LIMIT %s) c
    ORDER BY cardinality(ARRAY(SELECT unnest(c.minhash_bands) INTERSECT SELECT unnest(%s::bigint[]))) DESC,
             jaccard DESC, c.id
    LIMIT 1)"""


def minhash_sql(items: list[_Item]) -> tuple[str, list]:
    """The batch's MinHash look-up: (sql, params), one branch per sample."""
    branch = _MINHASH_BRANCH.format(sample=Sample._meta.db_table, num_perm=float(lexical.NUM_PERM))
    params = []
    for item in items:
        bands = _array_text(lexical.minhash_bands(item.signature))
        params += [item.sample.pk, _array_text(item.signature), _vector_text(item.vector), item.sample.lineage_id,
                   item.sample.pk, bands, settings.OUROBOROS["FLAG_MINHASH_CANDIDATES"], bands]
    return " UNION ALL ".join([branch] * len(items)), params


def _match(kind: str, pk, similarity) -> dict | None:
    if pk is None:
        return None
    similarity = round(float(similarity), 4)
    return {"kind": kind, "id": pk, "similarity": similarity, "cosine": similarity}


def _neighbours(items: list[_Item]) -> None:
    """The nearest earlier match of each sample in (a) its batch, (b) its whole lineage and (c) the real data.

    (b) is any earlier sample of the lineage, of any generation or status, by
    cosine (pgvector HNSW) and by MinHash Jaccard (LSH band overlap, GIN index).
    """
    tables = {"sample": Sample._meta.db_table, "passage": SourcePassage._meta.db_table}
    branches, params = [], []
    for item in items:
        vector, sample = _vector_text(item.vector), item.sample
        if sample.job_id is not None:
            branches.append(_NEAREST_BRANCH["batch"].format(**tables))
            params += [sample.pk, vector, sample.job_id, sample.pk]
        branches.append(_NEAREST_BRANCH["lineage"].format(**tables))
        params += [sample.pk, vector, sample.lineage_id, sample.pk]
        branches.append(_NEAREST_BRANCH["real"].format(**tables))
        params += [sample.pk, vector, sample.lineage_id]
    nearest: dict[tuple[int, str], tuple[int, float]] = {}
    lexical_best: dict[int, tuple[int, float, float | None]] = {}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(branches), params)
        for q, scope, pk, distance in cursor.fetchall():
            nearest[(q, scope)] = (pk, 1.0 - distance)
        sql, params = minhash_sql(items)
        cursor.execute(sql, params)
        for q, pk, jaccard, cosine in cursor.fetchall():
            lexical_best[q] = (pk, jaccard, cosine)
    for item in items:
        pk = item.sample.pk
        lineage = _match("sample", *nearest.get((pk, "lineage"), (None, None)))
        mh_id, mh_jaccard, mh_cos = lexical_best.get(pk, (None, 0.0, None))
        if mh_id is not None and mh_jaccard > (lineage or {}).get("similarity", -1.0):
            # A copy the embedding search ranked lower (or an HNSW miss): the lexical match wins.
            lineage = {"kind": "sample", "id": mh_id, "similarity": round(mh_jaccard, 4),
                       "cosine": None if mh_cos is None else round(float(mh_cos), 4), "jaccard": round(mh_jaccard, 4)}
        elif lineage is not None and mh_id == lineage["id"]:
            lineage["jaccard"] = round(mh_jaccard, 4)
        item.neighbours = {"batch": _match("sample", *nearest.get((pk, "batch"), (None, None))),
                           "lineage": lineage,
                           "real": _match("passage", *nearest.get((pk, "real"), (None, None)))}


# Per sentence: the top-k chunks of its lineage's corpus by cosine (HNSW), one branch each.
_GROUNDING_BRANCH = """(SELECT %s::int AS n, c.id FROM {chunk} c WHERE c.lineage_id = %s
                       ORDER BY c.embedding <=> %s::vector LIMIT %s)"""


def _candidates(items: list[_Item]) -> None:
    """Per sentence: the top-k chunks of the lineage's corpus (pgvector) plus the question's own passage's.

    One statement retrieves the top k of every sentence of the batch, one more
    reads those chunks and the own passages' chunks.
    """
    branches, params, owners = [], [], []
    k = settings.OUROBOROS["GROUNDING_TOP_K"]
    for item in items:
        for i, vector in enumerate(item.sentence_vecs):
            branches.append(_GROUNDING_BRANCH.format(chunk=PassageChunk._meta.db_table))
            params += [len(owners), item.sample.lineage_id, _vector_text(vector), k]
            owners.append((item, i))
    retrieved: dict[int, list[int]] = {}
    if branches:
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(branches), params)
            for n, chunk_id in cursor.fetchall():
                retrieved.setdefault(n, []).append(chunk_id)
    chunk_ids = {pk for ids in retrieved.values() for pk in ids}
    own_passages = {item.sample.passage_id for item in items}
    chunks = PassageChunk.objects.filter(passage_id__in=own_passages) | PassageChunk.objects.filter(pk__in=chunk_ids)
    refs, by_passage = {}, {}
    for chunk in chunks.select_related("passage").only("id", "text", "embedding", "position", "passage__id",
                                                         "passage__title").order_by("passage_id", "position"):
        refs[chunk.pk] = (chunk.text, np.asarray(chunk.embedding, dtype=np.float32),
                          {"passage_id": chunk.passage_id, "passage_title": chunk.passage.title, "chunk_id": chunk.pk,
                           "position": chunk.position})
        by_passage.setdefault(chunk.passage_id, []).append(chunk.pk)
    for item in items:
        item.candidates = []
    for n, (item, _) in enumerate(owners):
        ids = retrieved.get(n, [])
        seen = set(ids)
        own = [pk for pk in by_passage.get(item.sample.passage_id, []) if pk not in seen]
        item.candidates.append([_labelled(refs[pk], item.sample.passage_id) for pk in ids + own] + item.parent_refs)


def _labelled(ref: tuple, root_passage_id: int) -> Reference:
    """A chunk as a reference, saying what it is to this sample: its root passage, or another of the corpus."""
    text, vector, source = ref
    return Reference(text, vector, {**source, "supported_by": "root passage" if source["passage_id"] == root_passage_id
                                    else "corpus passage"})


def _similarity(match: dict | None) -> float:
    """The raw similarity of a match: the larger of its cosine and its MinHash Jaccard estimate."""
    if match is None:
        return 0.0
    return float(max(match.get("cosine") or 0.0, match.get("jaccard") or 0.0))


def _duplicate_score(text: str, match: dict | None, found: dict) -> float:
    """P(near-duplicate) of the sample's question + answer and one match (0 without one), from the pair model.

    The match is verified on its text (`detectors.duplicate_score`: cosine,
    shared words, numbers, names, order, length), so the score is a
    calibrated probability, comparable with the hallucination flag's.
    """
    if match is None:
        return 0.0
    other = found[(match["kind"], match["id"])]
    other_text = other.text if match["kind"] == "passage" else detectors.duplicate_text(other.question, other.answer)
    if match.get("cosine") is None:
        # A MinHash match stored without its embedding (only the HNSW look-up needs one): embed its text here.
        a, b = embedder.embed([text, other_text])
        match["cosine"] = round(float(np.dot(a, b)), 4)
    return detectors.duplicate_score(cosine=match["cosine"], a=text, b=other_text)


def _duplicate_evidence(match: dict, scope: str, score: float, lineage: Lineage, found: dict) -> dict:
    evidence = {
        "scope": scope,  # batch, lineage or real
        "probability": round(score, 4),
        "similarity": round(_similarity(match), 4),
        "cosine": match.get("cosine"),
        "jaccard": match.get("jaccard"),
        "threshold": lineage.duplicate_threshold,
    }
    if match["kind"] == "passage":
        passage = found[("passage", match["id"])]
        return {**evidence, "passage_id": passage.pk, "passage_title": passage.title, "passage_text": passage.text}
    duplicate = found[("sample", match["id"])]
    return {**evidence, "duplicate_id": duplicate.pk, "duplicate_question": duplicate.question,
            "duplicate_answer": duplicate.answer, "duplicate_status": duplicate.status}


def _score(item: _Item):
    """The hallucination seam: a sample's sentences, their retrieved chunks and the alternative answers in,
    per-sentence scores (and the sample's) out. New signals plug in here (`curation.detectors`)."""
    own = item.fitted.get(Flag.Kind.HALLUCINATION)
    return detectors.hallucination_score(
        sentences=item.sentences, sentence_vecs=item.sentence_vecs, candidates=item.candidates,
        alternatives=[a for a in (item.sample.alt_answers or []) if isinstance(a, str)],
        use_lm=item.sample.lineage.lm_grounding,  # the lineage's setting (issue 15): LM grounding on or off
        model=own.model if own else None,  # the lineage's own fit, when adopted (issue 15, item 3)
    )


def samples_flag(*, sample_ids: list[int], partial_corpus: bool = False) -> int:
    """Flag several samples as one batch, in id order; returns how many. Running it twice gives the same result.

    1. Make sure each lineage's source passages are embedded (`_passages_ready`).
    2. Embed, in one call, every question + answer, answer sentence and
       alternative-answer sentence of the batch, and the question + answer of
       the lineage's earlier samples still without an embedding (bounded).
    3. Store those embeddings and MinHash signatures, and commit: from here on
       any other worker's batch sees them (near-duplicates cannot race past each other).
    4. Look up every sample's neighbours and every sentence's grounding chunks
       with set-based queries (`_neighbours`, `_candidates`).
    5. Near-duplicate: the nearest earlier match in the batch, the lineage and
       the real data, each verified by the pair model into P(near-duplicate)
       (`_duplicate_score`); flagged when the likeliest match's probability is
       at least the lineage's duplicate threshold; the sample joins that
       match's cluster.
    6. Hallucination: each answer sentence is scored against its top-k passage
       chunks, its root passage's chunks, for a seeded sample (`parent`) the
       parent's question + answer, and the alternative answers (`_score`);
       each sentence's evidence says what supported it best ("root passage",
       "corpus passage", "parent sample N"); sentences whose risk reaches the
       lineage's threshold are stored with their best reference.
    7. Store each sample's flags, scores, novelty and cluster in one
       transaction of its own (a failure loses at most that sample's, whole).
    """
    samples = list(Sample.objects.filter(pk__in=sample_ids).select_related("lineage", "parent").order_by("id"))
    if not samples:
        return 0
    flagged = 0
    by_lineage: dict[int, list[Sample]] = {}
    for sample in samples:
        by_lineage.setdefault(sample.lineage_id, []).append(sample)
    for lineage_id, group in by_lineage.items():
        flagged += _flag_lineage_batch(lineage_id, group, partial_corpus=partial_corpus)
    return flagged


def _flag_lineage_batch(lineage_id: int, samples: list[Sample], *, partial_corpus: bool) -> int:
    passages_missing = _passages_ready(lineage_id, partial_corpus=partial_corpus)
    fitted = selectors.lineage_fitted_models(lineage_id=lineage_id)
    items = [_Item(sample, *_texts(sample), fitted=fitted) for sample in samples]
    for item in items:
        parent = item.sample.parent
        item.parent_texts = chunk_passage(f"{parent.question} {parent.answer}") if parent is not None else []
    ids = [s.pk for s in samples]
    # Earlier samples that another worker is still flagging (or whose message waits in the queue):
    # embedding their question + answer here is one short text each, and lets this batch see them.
    context = list(
        Sample.objects.filter(lineage_id=lineage_id, status=Sample.Status.PENDING, flagged_at__isnull=True,
                              embedding__isnull=True, id__lt=ids[-1]).exclude(pk__in=ids)
        .order_by("-id").only("id", "question", "answer")[: settings.OUROBOROS["FLAG_BATCH_SIZE"] * 4]
    )
    context_texts = [detectors.duplicate_text(s.question, s.answer) for s in context]
    texts = context_texts + [t for item in items
                             for t in (item.dup_text, *item.sentences, *item.alternatives, *item.parent_texts)]
    vectors = embedder.embed(texts)  # one call; the scorer's own embed of the alternatives hits the cache
    rows = [(s.pk, vectors[i], lexical.minhash(text), False) for i, (s, text) in enumerate(zip(context, context_texts))]
    start = len(context)
    for item in items:
        item.vector = vectors[start]
        item.sentence_vecs = vectors[start + 1 : start + 1 + len(item.sentences)]
        item.signature = lexical.minhash(item.dup_text)
        start += 1 + len(item.sentences) + len(item.alternatives)
        label = f"parent sample {item.sample.parent_id}"
        source = {"supported_by": label, "sample_id": item.sample.parent_id, "passage_title": label}
        item.parent_refs = [Reference(text, vectors[start + n], source) for n, text in enumerate(item.parent_texts)]
        start += len(item.parent_texts)
        rows.append((item.sample.pk, item.vector, item.signature, True))

    with transaction.atomic():
        _store_signatures(rows)
    with transaction.atomic():
        _hnsw_settings()
        _neighbours(items)
        _candidates(items)

    # What the evidence shows of each match: one query per kind for the whole batch.
    found = match_objects(m for item in items for m in item.neighbours.values())
    _store([(item, *_verdict(item, _score(item), found, passages_missing)) for item in items],
           version=detector_version(fitted))
    return len(items)


def detector_version(fitted: dict) -> str:
    """The detectors a lineage's samples are scored by: the defaults', or its own adopted fits' (`+lineage<k>`)."""
    dup, halluc = (fitted[k].version if k in fitted else default
                   for k, default in ((Flag.Kind.NEAR_DUPLICATE, detectors.DUPLICATE_VERSION),
                                      (Flag.Kind.HALLUCINATION, detectors.HALLUCINATION_VERSION)))
    return f"{dup}+{halluc}"


def match_objects(matches) -> dict:
    """The samples and passages the matches name, keyed by (kind, id): one query per kind."""
    wanted = {(m["kind"], m["id"]) for m in matches if m}
    found = {("sample", s.pk): s for s in Sample.objects.filter(pk__in=[i for k, i in wanted if k == "sample"])
             .only("id", "question", "answer", "status")}
    found |= {("passage", p.pk): p for p in SourcePassage.objects.filter(
        pk__in=[i for k, i in wanted if k == "passage"]).only("id", "title", "text")}
    return found


def _match_text(match: dict, found: dict) -> str | None:
    other = found.get((match["kind"], match["id"]))
    if other is None:
        return None
    return other.text if match["kind"] == "passage" else detectors.duplicate_text(other.question, other.answer)


def _scored_duplicates(item: _Item, found: dict) -> dict[str, float]:
    """Each scope's match scored: by the default, or by the lineage's own pair model when adopted."""
    own = item.fitted.get(Flag.Kind.NEAR_DUPLICATE)
    if own is None:
        return {scope: _duplicate_score(item.dup_text, m, found) for scope, m in item.neighbours.items()}
    from curation.services.lineage_fit import duplicate_probability

    return {scope: 0.0 if m is None else duplicate_probability(own.model, item.dup_text, _match_text(m, found), m)
            for scope, m in item.neighbours.items()}


def _with_support(hallucination, evidence: dict) -> dict:
    """Each sentence says what grounded it best: "root passage", "corpus passage" or "parent sample N"."""
    for row, scored in zip(evidence["sentences"], hallucination.sentences):
        source = scored.best.source if scored.best else {}
        row["supported_by"] = source.get("supported_by")
        if "sample_id" in source:
            row["parent_sample_id"] = source["sample_id"]
    return evidence


def _verdict(item: _Item, hallucination, found: dict, passages_missing: int) -> tuple[list[Flag], dict]:
    """Steps 5 and 6 for one sample: the flags it raises and the columns it gets."""
    sample, lineage, neighbours = item.sample, item.sample.lineage, item.neighbours
    scored = _scored_duplicates(item, found)
    scope = max(scored, key=lambda s: scored[s])
    dup_score = scored[scope]
    best = neighbours[scope]
    raised: list[Flag] = []
    is_duplicate = best is not None and dup_score >= lineage.duplicate_threshold
    if is_duplicate:
        raised.append(Flag(sample=sample, kind=Flag.Kind.NEAR_DUPLICATE, score=round(dup_score, 4),
                           evidence=_duplicate_evidence(best, scope, dup_score, lineage, found),
                           detector_version=(item.fitted[Flag.Kind.NEAR_DUPLICATE].version
                                             if Flag.Kind.NEAR_DUPLICATE in item.fitted
                                             else detectors.DUPLICATE_VERSION)))
    if hallucination.score >= lineage.hallucination_threshold:
        evidence = _with_support(hallucination, hallucination.evidence(threshold=lineage.hallucination_threshold))
        own = item.fitted.get(Flag.Kind.HALLUCINATION)
        # The lineage's own model scored it unless the rows lacked a feature it reads (then the default did).
        version = own.version if own and hallucination.model is own.model else detectors.HALLUCINATION_VERSION
        evidence["detector"] = version
        if passages_missing:
            evidence["passages_not_yet_embedded"] = passages_missing
        raised.append(Flag(sample=sample, kind=Flag.Kind.HALLUCINATION, score=round(hallucination.score, 4),
                           evidence=evidence, detector_version=version))
    # A match with a lineage sample (b) or a batch sample (a) joins its cluster; a copy of real data has none.
    joins = best["id"] if is_duplicate and scope in ("batch", "lineage") else None
    return raised, {
        # Novelty stays a similarity (1 − the closest match's), not a probability: it measures diversity.
        "novelty": novelty(max(_similarity(m) for m in neighbours.values()) if any(neighbours.values()) else None),
        "duplicate_score": round(dup_score, 4),
        "hallucination_score": round(hallucination.score, 4),
        "neighbours": {**{k: m and {**m, "probability": round(scored[k], 4)} for k, m in neighbours.items()},
                       "scope": scope},
        "joins": joins,
        # The queue's risk order reads this column: the highest score among the flags stored.
        "risk": max((flag.score for flag in raised), default=0.0),
    }


_UPDATE_SAMPLES_SQL = """
UPDATE {sample} AS s
SET novelty = v.novelty, duplicate_score = v.duplicate_score, hallucination_score = v.hallucination_score,
    neighbours = v.neighbours::jsonb, cluster_id = v.cluster_id, risk = v.risk,
    detector_version = %s, flagged_at = now()
FROM unnest(%s::bigint[], %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::bigint[], %s::float8[])
     AS v(id, novelty, duplicate_score, hallucination_score, neighbours, cluster_id, risk)
WHERE s.id = v.id
"""


def _store(verdicts: list[tuple[_Item, list[Flag], dict]], *, version: str = DETECTOR_VERSION) -> None:
    """Step 7: the batch's flags, clusters and scores in one transaction, a few statements in all.

    1. Lock the batch's rows and those of the earlier samples they join, in id
       order (two batches never wait on each other in a circle), reading their
       clusters as they are once locked.
    2. Replace the batch's flags (one delete, one upsert).
    3. Clusters, in id order, as single linkage through earlier samples: a
       duplicate joins its match's cluster, founded around the match if it has
       none; a sample that is no duplicate stays only in a cluster it founded.
       A later copy joining one of these samples locks its row first, so it
       waits for this transaction and reads the cluster it ends in.
    4. Write every sample's scores, cluster and flag time.
    """
    ids = [item.sample.pk for item, _, _ in verdicts]
    joined = {columns["joins"] for _, _, columns in verdicts if columns["joins"] is not None}
    table = Sample._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT id, cluster_id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
                       [sorted(set(ids) | joined)])
        cluster_of = dict(cursor.fetchall())

        raised = [flag for _, flags, _ in verdicts for flag in flags]
        cursor.execute(f"DELETE FROM {Flag._meta.db_table} f USING unnest(%s::bigint[]) AS b(id) "
                       "WHERE f.sample_id = b.id AND NOT (f.sample_id, f.kind) IN "
                       "(SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                       [ids, [f.sample_id for f in raised], [f.kind for f in raised]])
        if raised:
            Flag.objects.bulk_create(raised, update_conflicts=True, unique_fields=["sample", "kind"],
                                     update_fields=["score", "evidence", "detector_version"])

        founded = dict(DuplicateCluster.objects.filter(representative_id__in=set(ids) | joined)
                       .values_list("representative_id", "id"))
        lineage_of = {item.sample.pk: item.sample.lineage_id for item, _, _ in verdicts}
        moved_earlier = {}
        final = {}
        for item, _, columns in verdicts:
            pk, match = item.sample.pk, columns["joins"]
            if match is None:
                final[pk] = founded.get(pk)
            else:
                cluster = cluster_of.get(match)
                if cluster is None:
                    cluster = founded.get(match)
                    if cluster is None:
                        cluster = DuplicateCluster.objects.create(representative_id=match,
                                                                  lineage_id=lineage_of[pk]).pk
                        founded[match] = cluster
                    cluster_of[match] = cluster
                    if match in final:
                        final[match] = cluster  # a sample of this batch, written below
                    else:
                        moved_earlier[match] = cluster
                final[pk] = cluster
            cluster_of[pk] = final[pk]
        if moved_earlier:
            cursor.execute(f"UPDATE {table} AS s SET cluster_id = v.cluster FROM unnest(%s::bigint[], %s::bigint[]) "
                           "AS v(id, cluster) WHERE s.id = v.id", [list(moved_earlier), list(moved_earlier.values())])

        columns = [c for _, _, c in verdicts]
        cursor.execute(_UPDATE_SAMPLES_SQL.format(sample=table), [
            version, ids, [c["novelty"] for c in columns], [c["duplicate_score"] for c in columns],
            [c["hallucination_score"] for c in columns], [json.dumps(c["neighbours"]) for c in columns],
            [final[pk] for pk in ids], [c["risk"] for c in columns],
        ])


def samples_hallucination_rescore(*, samples: list[Sample]) -> dict[int, "detectors.HallucinationResult"]:
    """The default hallucination scoring of stored samples again, writing nothing: for fitting a lineage's own model.

    Steps 2, 4 and 6 of `samples_flag` for the answers only: embed their
    sentences (and a seeded sample's parent), retrieve each sentence's chunks
    from the lineage's stored chunk embeddings, and score them with the
    default model. Flags store a sentence's signals only when it raised one,
    so decided samples that were not flagged need this to get their rows.
    `samples` come with their lineage and parent (`select_related`).
    """
    items = [_Item(sample, *_texts(sample)) for sample in samples]
    texts = []
    for item in items:
        parent = item.sample.parent
        item.parent_texts = chunk_passage(f"{parent.question} {parent.answer}") if parent is not None else []
        texts += [*item.sentences, *item.parent_texts]
    # One encode call: the scorer's own embeds (alternatives, self-contained sentences) then hit the cache.
    extra = [t for item in items for t in (*item.alternatives, *checks.decontextualise(item.sentences))]
    vectors = embedder.embed(texts + extra) if texts else np.zeros((0, 0))
    start = 0
    for item in items:
        item.sentence_vecs = vectors[start : start + len(item.sentences)]
        start += len(item.sentences)
        label = f"parent sample {item.sample.parent_id}"
        source = {"supported_by": label, "sample_id": item.sample.parent_id, "passage_title": label}
        item.parent_refs = [Reference(text, vectors[start + n], source) for n, text in enumerate(item.parent_texts)]
        start += len(item.parent_texts)
    with transaction.atomic():
        _hnsw_settings()
        _candidates(items)
    return {item.sample.pk: _score(item) for item in items if item.sentences}


def sample_flag(*, sample_id: int) -> list[Flag]:
    """Flag one sample (a batch of one); returns its flags. Running it twice gives the same result."""
    Sample.objects.only("id").get(pk=sample_id)  # a clear DoesNotExist for a deleted sample
    samples_flag(sample_ids=[sample_id])
    return list(Flag.objects.filter(sample_id=sample_id).order_by("kind"))


def samples_flag_missing(*, limit: int = 500, older_than_s: int | None = None) -> list[int]:
    """Queue flagging for samples that never got flags (a lost message, a dead worker, a Redis
    that restarted empty); only those older than `older_than_s` (default FLAG_MISSING_AFTER_SECONDS),
    so that samples whose message is merely waiting in the queue are left alone."""
    if older_than_s is None:
        older_than_s = settings.OUROBOROS["FLAG_MISSING_AFTER_SECONDS"]
    ids = list(
        Sample.objects.filter(flagged_at__isnull=True, created_at__lt=timezone.now() - timedelta(seconds=older_than_s))
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    for sample_id in ids:
        with transaction.atomic():
            sample_flag_later(sample_id=sample_id)
    return ids
