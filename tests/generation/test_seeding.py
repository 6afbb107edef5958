"""Seeding from accepted samples: the seeded share of items asks about accepted records of the
latest published training set, every sample records its parent, and the tutor may see accepted
questions of earlier generations as style examples."""
import random

import pytest

from curation.models import Sample, SourcePassage, TrainingSet
from curation.services.exports import export_run
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.dialogue.examples import style_examples_pick
from generation.models import GeneratorSettings, GenerationJob
from generation.services import job_create, job_run_chunk, passage_pick
from generation.services.jobs import item_is_seeded
from tests.factories import make_lineage, make_sample


def run_to_end(job, limit=50):
    for _ in range(limit):
        job_run_chunk(job_id=job.pk)
        job.refresh_from_db()
        if not job.is_active:
            return job
    raise AssertionError("job did not finish")


ACCEPTED = [
    ("Which pigment do chloroplasts use to capture light?", "Chloroplasts use chlorophyll. It absorbs light."),
    ("Where does the Calvin cycle run?", "The Calvin cycle runs in the stroma. Rubisco fixes carbon there."),
    ("Why is oxygen released during photosynthesis?", "Water molecules are split. Oxygen is the by-product."),
    ("How does glycolysis begin cellular respiration?", "Glycolysis splits glucose into pyruvate. It yields ATP."),
    ("What does helicase do at a replication fork?", "Helicase unwinds the double helix. Strands separate."),
    ("What are Okazaki fragments?", "They are short pieces of the lagging strand. Ligase joins them."),
]


def publish_generation_one(lineage, curator, reviewer, settings, tmp_path, capture, accepted=6):
    settings.EXPORT_ROOT = tmp_path / "exports"
    for question, answer in ACCEPTED[:accepted]:
        sample_accept(sample=make_sample(lineage, question=question, answer=answer), reviewer=reviewer)
    with capture(execute=False):
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=5)
    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED
    return training_set


@pytest.mark.parametrize("fraction,items", [(0.5, 8), (0.25, 8), (0.3, 10), (1.0, 5), (0.0, 5)])
def test_the_seeded_share_of_a_job_is_the_setting_to_within_one_item(fraction, items):
    for seed in range(20):
        seeded = sum(item_is_seeded(seed=seed, index=i, fraction=fraction) for i in range(items))
        assert abs(seeded - fraction * items) < 1, (seed, seeded)


def test_which_items_are_seeded_follows_the_job_seed():
    draws = {tuple(item_is_seeded(seed=seed, index=i, fraction=0.5) for i in range(8)) for seed in range(20)}
    assert len(draws) == 2  # f = 1/2: every other item, starting at the first or the second


def test_seeded_items_take_a_published_record_and_keep_it_as_parent(
        lineage, curator, reviewer, settings, tmp_path, django_capture_on_commit_callbacks):
    training_set = publish_generation_one(lineage, curator, reviewer, settings, tmp_path,
                                          django_capture_on_commit_callbacks)
    GeneratorSettings.objects.filter(lineage=lineage).update(synthetic_context_fraction=0.5)
    job = job_create(lineage=lineage, requested=8, seed=11, chunk_size=8)
    run_to_end(job)
    samples = list(Sample.objects.filter(job=job))
    seeded = [s for s in samples if s.parent_id]
    members = set(training_set.samples.values_list("pk", flat=True))
    assert len(samples) == 8 and len(seeded) == 4
    for sample in seeded:
        assert sample.parent_id in members
        assert sample.passage_id == sample.parent.passage_id, "the passage is the root of the chain"
        assert sample.provenance["material"] == "sample" and sample.provenance["parent"] == sample.parent_id
    for sample in samples:
        if not sample.parent_id:
            assert sample.provenance["material"] == "passage" and sample.provenance["parent"] is None


def test_seeded_tutor_reads_the_parent_question_and_answer(
        lineage, curator, reviewer, settings, tmp_path, django_capture_on_commit_callbacks, monkeypatch):
    from generation.backends.fake import FakeBackend

    publish_generation_one(lineage, curator, reviewer, settings, tmp_path, django_capture_on_commit_callbacks)
    GeneratorSettings.objects.filter(lineage=lineage).update(synthetic_context_fraction=1.0)
    sent = []
    real = FakeBackend.generate
    monkeypatch.setattr(FakeBackend, "generate", lambda self, m, p: sent.append(m) or real(self, m, p))
    job = job_create(lineage=lineage, requested=1, seed=3)
    run_to_end(job)
    sample = Sample.objects.get(job=job)
    tutor_material = sent[0][-1]["content"]
    assert sample.parent.question in tutor_material and sample.parent.answer in tutor_material
    passages = SourcePassage.objects.filter(lineage=lineage).values_list("text", flat=True)
    assert not any(text in tutor_material for text in passages)


def test_without_a_published_set_every_item_asks_about_a_real_passage(lineage):
    GeneratorSettings.objects.filter(lineage=lineage).update(synthetic_context_fraction=1.0)
    job = run_to_end(job_create(lineage=lineage, requested=3, seed=2))
    assert job.done_count == 3
    assert not Sample.objects.filter(job=job, parent__isnull=False).exists()


def test_style_examples_never_show_two_near_duplicates():
    candidates = [
        ("What pigment do chloroplasts use?", [1.0, 0.0, 0.0]),
        ("Which pigment do chloroplasts use?", [0.99, 0.05, 0.0]),
        ("Where does the Calvin cycle run?", [0.0, 1.0, 0.0]),
        ("Why is oxygen released?", [0.0, 0.0, 1.0]),
        ("Why is oxygen released by plants?", None),
    ]
    for seed in range(30):
        picked = style_examples_pick(candidates, k=4, rng=random.Random(seed), threshold=0.9)
        assert len(picked) == 3, picked
        assert not {"What pigment do chloroplasts use?", "Which pigment do chloroplasts use?"} <= set(picked)
        assert not {"Why is oxygen released?", "Why is oxygen released by plants?"} <= set(picked)


def test_the_tutor_sees_accepted_questions_of_earlier_generations_as_examples(
        lineage, curator, reviewer, settings, tmp_path, django_capture_on_commit_callbacks, monkeypatch):
    from generation.backends.fake import FakeBackend

    publish_generation_one(lineage, curator, reviewer, settings, tmp_path, django_capture_on_commit_callbacks,
                           accepted=3)
    GeneratorSettings.objects.filter(lineage=lineage).update(style_examples=2)
    sent = []
    real = FakeBackend.generate
    monkeypatch.setattr(FakeBackend, "generate", lambda self, m, p: sent.append(m) or real(self, m, p))
    job = run_to_end(job_create(lineage=lineage, requested=1, seed=3))
    system = sent[0][0]["content"]
    shown = [line[2:] for line in system.splitlines() if line.startswith("- ")]
    assert len(shown) == 2 and set(shown) <= {q for q, _ in ACCEPTED[:3]}
    assert Sample.objects.get(job=job).provenance["style_examples"] == shown


@pytest.mark.parametrize("passages", [10, 100])
def test_picking_a_passage_costs_the_same_queries_at_any_size(db, passages, django_assert_max_num_queries):
    lineage = make_lineage(passages=1)
    SourcePassage.objects.bulk_create([
        SourcePassage(lineage=lineage, text=f"Passage {i} about cells.", content_hash=f"{lineage.pk}-{i}")
        for i in range(passages - 1)
    ])
    first = lineage.passages.first()
    for _ in range(passages):  # samples over the passages: the old pick counted them all
        make_sample(lineage, passage=first)
    job = GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=5)
    with django_assert_max_num_queries(3):
        passage_pick(job=job, index=0)
    with django_assert_max_num_queries(2):  # the job's offset is kept for the rest of the chunk
        passage_pick(job=job, index=1)


def test_a_job_goes_round_the_passages_from_where_the_last_job_stopped(lineage):
    ids = list(lineage.passages.order_by("id").values_list("id", flat=True))
    first = run_to_end(job_create(lineage=lineage, requested=4, seed=1))
    second = run_to_end(job_create(lineage=lineage, requested=4, seed=2))
    used = [s.passage_id for job in (first, second) for s in Sample.objects.filter(job=job).order_by("item_index")]
    assert used == [ids[i % 6] for i in range(8)]


def test_the_sample_page_shows_the_chain_back_to_the_real_passage(curator_client, lineage):
    from django.urls import reverse

    root = make_sample(lineage, question="Which pigment do <b>chloroplasts</b> use?")
    child = make_sample(lineage, question="What colour does chlorophyll reflect?", parent=root, passage=root.passage)
    grandchild = make_sample(lineage, question="Why do leaves look green?", parent=child, passage=root.passage)
    page = curator_client.get(reverse("sample-detail", args=[grandchild.pk])).content.decode()
    chain = page[page.index('class="ancestry"'):]
    assert chain.index(f"sample {child.pk}") < chain.index(f"sample {root.pk}") < chain.index("the real passage")
    assert "Which pigment do &lt;b&gt;chloroplasts&lt;/b&gt; use?" in page, "generated text is escaped"
    assert "Root passage" in page
    plain = curator_client.get(reverse("sample-detail", args=[root.pk])).content.decode()
    assert 'class="ancestry"' not in plain and "Source passage" in plain
