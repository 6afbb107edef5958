"""Flags from the real all-MiniLM-L6-v2 model and real pgvector searches."""
import pytest

from curation import detectors
from curation.models import DuplicateCluster, Flag, PassageChunk, Sample
from curation.services.flagging import DETECTOR_VERSION, passages_embed_missing, sample_flag, samples_flag
from generation.models import GenerationJob
from tests.factories import demo_passages, make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def photosynthesis(lineage):
    """The lineage's passage on photosynthesis, which the samples below talk about."""
    return next(p for p in lineage.passages.all() if "photosynthesis" in p.text.lower())


def grounded_answer(passage) -> str:
    return ". ".join(passage.text.split(". ")[:2]).strip() + "."


def make_job(lineage) -> GenerationJob:
    return GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(status="open"),
                                        requested=4)


def test_passages_are_embedded_and_cut_into_sentence_windows_once(lineage):
    assert passages_embed_missing(lineage_id=lineage.pk) == lineage.passages.count()
    chunks = PassageChunk.objects.filter(lineage=lineage)
    first = lineage.passages.first()
    own = list(chunks.filter(passage=first).order_by("position").values_list("text", flat=True))
    assert own == detectors.chunk_passage(first.text) and len(own) > 10
    count = chunks.count()
    assert passages_embed_missing(lineage_id=lineage.pk) == 0 and chunks.count() == count


def test_an_answer_taken_from_the_passage_is_not_flagged(lineage, photosynthesis):
    sample = make_sample(lineage, question="What is photosynthesis?", answer=grounded_answer(photosynthesis),
                         passage=photosynthesis, flagged=False)
    assert sample_flag(sample_id=sample.pk) == []
    sample.refresh_from_db()
    assert sample.flagged_at is not None and sample.embedding is not None
    assert sample.hallucination_score < lineage.hallucination_threshold
    assert sample.detector_version == DETECTOR_VERSION
    # No earlier sample, so the nearest thing before it is the real passage it was taken from.
    assert sample.neighbours["lineage"] is None and sample.neighbours["batch"] is None
    assert sample.neighbours["real"]["id"] == photosynthesis.pk
    assert sample.novelty == pytest.approx(1 - sample.neighbours["real"]["similarity"], abs=1e-3)
    assert 0 < sample.novelty < 1


def test_an_unsupported_sentence_is_flagged_with_its_best_passage(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis) + " The Eiffel Tower was painted bright orange by Napoleon in 1999."
    sample = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    [flag] = sample_flag(sample_id=sample.pk)
    assert flag.kind == Flag.Kind.HALLUCINATION and flag.detector_version == detectors.HALLUCINATION_VERSION
    unsupported = flag.evidence["unsupported"]
    assert [item["sentence"] for item in unsupported] == [
        "The Eiffel Tower was painted bright orange by Napoleon in 1999."
    ]
    assert unsupported[0]["risk"] >= lineage.hallucination_threshold
    assert unsupported[0]["passage_id"] in set(lineage.passages.values_list("id", flat=True))
    assert unsupported[0]["passage_text"]
    assert flag.score == pytest.approx(unsupported[0]["risk"], abs=1e-3)
    assert [s["unsupported"] for s in flag.evidence["sentences"]] == [False, False, True]


def test_a_lineage_with_lm_grounding_flags_the_invented_sentence_with_its_pmi_in_the_evidence(lineage, photosynthesis):
    """LM grounding on: the worker's scorer reads the passage, and the invented sentence has the lowest PMI."""
    answer = grounded_answer(photosynthesis) + " The Eiffel Tower was painted bright orange by Napoleon in 1999."
    lineage.lm_grounding = True
    lineage.save(update_fields=["lm_grounding"])
    sample = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    [flag] = sample_flag(sample_id=sample.pk)
    sentences = flag.evidence["sentences"]
    assert all("pmi" in s["signals"] and "answer_pmi" in s["signals"] for s in sentences)
    assert [s["unsupported"] for s in sentences] == [False, False, True]
    assert sentences[2]["signals"]["pmi"] < min(s["signals"]["pmi"] for s in sentences[:2])


def test_flagging_stores_the_queue_risk_on_every_path(lineage, photosynthesis):
    """Risk is the highest flag score, written by flagging itself, so a re-flag keeps the queue order right."""
    clean = make_sample(lineage, answer=grounded_answer(photosynthesis), passage=photosynthesis, flagged=False)
    flagged = make_sample(lineage, answer="Napoleon painted the Moon orange in 1999 with a giant brush.",
                          flagged=False)
    samples_flag(sample_ids=[clean.pk, flagged.pk])  # the re-flag job's path, not the task's
    flagged.refresh_from_db()
    clean.refresh_from_db()
    assert flagged.risk == pytest.approx(max(f.score for f in flagged.flags.all())) and flagged.risk > 0
    assert not clean.flags.exists() and clean.risk == 0.0


def test_a_changed_number_is_caught_although_the_embedding_barely_moves(lineage, photosynthesis):
    right = make_sample(lineage, answer="The overall reaction combines six molecules of carbon dioxide and six "
                                        "molecules of water.", passage=photosynthesis, flagged=False)
    wrong = make_sample(lineage, answer="The overall reaction combines 14 molecules of carbon dioxide and 14 "
                                        "molecules of water.", passage=photosynthesis, flagged=False)
    sample_flag(sample_id=right.pk)
    sample_flag(sample_id=wrong.pk)
    right.refresh_from_db(), wrong.refresh_from_db()
    assert wrong.hallucination_score > right.hallucination_score + 0.1


def test_grounding_searches_the_whole_corpus_not_only_the_question_passage(lineage, photosynthesis):
    respiration = next(p for p in lineage.passages.all() if p.title == "Cellular Respiration")
    sample = make_sample(lineage, passage=photosynthesis, flagged=False,
                         answer="In glycolysis one glucose molecule is split into two molecules of pyruvate.")
    assert sample_flag(sample_id=sample.pk) == []
    sample.refresh_from_db()
    assert sample.hallucination_score < lineage.hallucination_threshold
    assert respiration.pk != photosynthesis.pk


def test_alternative_answers_that_disagree_lower_a_sentences_support(lineage):
    passage = next(p for p in lineage.passages.all() if p.title == "Cellular Respiration")
    answer = "Fermentation yields far less ATP than aerobic respiration."
    agree = make_sample(lineage, passage=passage, answer=answer, flagged=False,
                        alt_answers=["Fermentation gives much less ATP than aerobic respiration does."] * 2)
    disagree = make_sample(lineage, passage=passage, answer=answer, flagged=False,
                           alt_answers=["Volcanoes form where tectonic plates meet.",
                                        "The French Revolution began in 1789."])
    sample_flag(sample_id=agree.pk)
    sample_flag(sample_id=disagree.pk)
    agree.refresh_from_db(), disagree.refresh_from_db()
    assert disagree.hallucination_score > agree.hallucination_score


def test_a_paraphrase_of_an_earlier_sample_is_a_near_duplicate_in_one_cluster(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis)
    first = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    sample_flag(sample_id=first.pk)
    second = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    third = make_sample(lineage, question="What is photosynthesis about?", answer=answer, flagged=False)
    flags = {f.kind: f for f in sample_flag(sample_id=second.pk)}
    sample_flag(sample_id=third.pk)
    duplicate = flags[Flag.Kind.NEAR_DUPLICATE]
    assert duplicate.evidence["duplicate_id"] == first.pk and duplicate.evidence["scope"] == "lineage"
    # The score is the pair model's calibrated probability; the similarities stay on the card as evidence.
    assert duplicate.score >= 0.95 and duplicate.evidence["probability"] == duplicate.score
    assert duplicate.score == pytest.approx(detectors.duplicate_score(
        cosine=duplicate.evidence["cosine"], a=detectors.duplicate_text(second.question, answer),
        b=detectors.duplicate_text(first.question, answer)), abs=1e-4)
    assert duplicate.evidence["cosine"] == pytest.approx(1.0, abs=1e-3)
    assert duplicate.evidence["jaccard"] == pytest.approx(1.0) and duplicate.detector_version == detectors.DUPLICATE_VERSION
    second.refresh_from_db()
    assert second.novelty == pytest.approx(0.0, abs=1e-3)
    cluster = DuplicateCluster.objects.get(lineage=lineage)
    assert cluster.representative_id == first.pk
    assert set(Sample.objects.filter(cluster=cluster).values_list("id", flat=True)) == {first.pk, second.pk, third.pk}


def test_an_unrelated_earlier_sample_gives_a_low_probability_and_no_flag(lineage, photosynthesis):
    first = make_sample(lineage, question="What is photosynthesis?", answer=grounded_answer(photosynthesis),
                        flagged=False)
    sample_flag(sample_id=first.pk)
    other = make_sample(lineage, question="Why did the Roman Empire split in two?",
                        answer="The empire was too large to govern from one city, so Diocletian divided it between "
                               "an eastern and a western emperor in 286.", flagged=False)
    flags = sample_flag(sample_id=other.pk)
    other.refresh_from_db()
    assert Flag.Kind.NEAR_DUPLICATE not in {f.kind for f in flags}
    assert other.neighbours["lineage"]["id"] == first.pk
    assert other.duplicate_score < 0.05 and other.neighbours["lineage"]["probability"] < 0.05
    assert other.novelty == pytest.approx(1 - max(m["similarity"] for m in (other.neighbours["lineage"],
                                                                           other.neighbours["real"])), abs=1e-3)


def test_samples_of_any_generation_and_status_count_as_before(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis)
    old = make_sample(lineage, answer=answer, flagged=False, status=Sample.Status.REJECTED)
    sample_flag(sample_id=old.pk)
    lineage.generations.filter(status="open").update(status="closed")
    lineage.generations.create(number=2)
    new = make_sample(lineage, answer=answer, flagged=False)
    assert new.generation.number == 2
    [flag] = [f for f in sample_flag(sample_id=new.pk) if f.kind == Flag.Kind.NEAR_DUPLICATE]
    assert flag.evidence["duplicate_id"] == old.pk and flag.evidence["duplicate_status"] == "rejected"


def test_a_copy_within_the_same_batch_is_reported_as_such(lineage, photosynthesis):
    job = make_job(lineage)
    answer = "Chlorophyll in the chloroplasts absorbs the light that drives photosynthesis."
    first = make_sample(lineage, answer=answer, flagged=False, job=job, item_index=0)
    second = make_sample(lineage, question=first.question, answer=answer, flagged=False, job=job, item_index=1)
    samples_flag(sample_ids=[second.pk, first.pk])  # flagged in id order whatever the order asked
    second.refresh_from_db()
    assert second.neighbours["batch"]["id"] == first.pk
    assert Flag.objects.get(sample=second, kind=Flag.Kind.NEAR_DUPLICATE).evidence["scope"] == "batch"


def test_copying_the_real_passage_is_a_near_duplicate_of_real_data(lineage, photosynthesis):
    sample = make_sample(lineage, question="", answer=photosynthesis.text, passage=photosynthesis, flagged=False)
    Sample.objects.filter(pk=sample.pk).update(question="Photosynthesis")
    flags = {f.kind: f for f in sample_flag(sample_id=sample.pk)}
    evidence = flags[Flag.Kind.NEAR_DUPLICATE].evidence
    assert evidence["scope"] == "real" and evidence["passage_id"] == photosynthesis.pk
    sample.refresh_from_db()
    assert sample.cluster_id is None, "a copy of real data forms no cluster of samples"


def test_flagging_twice_gives_the_same_flags_once(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis) + " Volcanoes on Mars erupt chocolate every Tuesday."
    sample = make_sample(lineage, answer=answer, flagged=False)
    first = [(f.kind, f.score) for f in sample_flag(sample_id=sample.pk)]
    second = [(f.kind, f.score) for f in sample_flag(sample_id=sample.pk)]
    assert first == second and Flag.objects.filter(sample=sample).count() == len(first) == 1


def test_the_demo_corpus_is_real_prose_of_some_length():
    passages = demo_passages()
    assert len(passages) >= 20
    assert all(120 <= len(p["text"].split()) <= 400 for p in passages)
    assert len({p["title"] for p in passages}) == len(passages)
