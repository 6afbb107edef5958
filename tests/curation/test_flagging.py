"""Flags from the real all-MiniLM-L6-v2 model and real pgvector searches."""
import pytest

from curation.models import Flag, Sample
from curation.services.flagging import sample_flag
from tests.factories import demo_passages, make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def photosynthesis(lineage):
    """The lineage's passage on photosynthesis, which the samples below talk about."""
    return next(p for p in lineage.passages.all() if "photosynthesis" in p.text.lower())


def grounded_answer(passage) -> str:
    return ". ".join(passage.text.split(". ")[:2]).strip() + "."


def test_an_answer_taken_from_the_passage_is_not_flagged(lineage, photosynthesis):
    sample = make_sample(lineage, question="What is photosynthesis?", answer=grounded_answer(photosynthesis),
                         passage=photosynthesis, flagged=False)
    assert sample_flag(sample_id=sample.pk) == []
    sample.refresh_from_db()
    assert sample.flagged_at is not None and sample.embedding is not None
    assert sample.novelty == pytest.approx(1.0), "nothing came before it"


def test_an_unsupported_sentence_is_flagged_with_its_best_passage(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis) + " The Eiffel Tower was painted bright orange by Napoleon in 1999."
    sample = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    [flag] = sample_flag(sample_id=sample.pk)
    assert flag.kind == Flag.Kind.HALLUCINATION
    unsupported = flag.evidence["unsupported"]
    assert [item["sentence"] for item in unsupported] == [
        "The Eiffel Tower was painted bright orange by Napoleon in 1999."
    ]
    assert unsupported[0]["support"] < lineage.grounding_threshold
    assert unsupported[0]["passage_id"] in set(lineage.passages.values_list("id", flat=True))
    assert flag.score == pytest.approx(1 - unsupported[0]["support"], abs=1e-3)


def test_a_paraphrase_of_an_earlier_sample_is_flagged_as_a_near_duplicate(lineage, photosynthesis):
    answer = grounded_answer(photosynthesis)
    first = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    sample_flag(sample_id=first.pk)
    second = make_sample(lineage, question="What is photosynthesis?", answer=answer, flagged=False)
    flags = {f.kind: f for f in sample_flag(sample_id=second.pk)}
    duplicate = flags[Flag.Kind.NEAR_DUPLICATE]
    assert duplicate.evidence["duplicate_id"] == first.pk
    assert duplicate.score == pytest.approx(1.0, abs=1e-3)
    second.refresh_from_db()
    assert second.novelty == pytest.approx(0.0, abs=1e-3)


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
