"""Re-flagging a lineage as a chunked job, and the clusters a reviewer sees."""
import pytest
from django.urls import reverse

from curation import selectors
from curation.models import Flag, FlagRun, Lineage, Sample
from curation.services.flagging import DETECTOR_VERSION, sample_flag
from curation.services import reflag
from curation.services.reflag import ReflagError, flag_run_chunk, flag_run_create
from tests.factories import make_sample

pytestmark = pytest.mark.django_db

ANSWER = "Chlorophyll in the chloroplasts absorbs the light that drives photosynthesis."
QUESTION = "What does chlorophyll do?"


def test_a_run_reflags_every_sample_in_chunks_with_progress(lineage, django_capture_on_commit_callbacks):
    others = iter(["Mitosis makes two identical nuclei.", "Antibodies are made by plasma cells.",
                   "Whales descend from land mammals."])
    # The copies repeat question and answer (the factory's default questions differ by a number, which the
    # pair model rightly reads as a different item).
    samples = [make_sample(lineage, **(dict(question=QUESTION, answer=ANSWER) if i % 2 else dict(answer=next(others))),
                           flagged=False) for i in range(5)]
    with django_capture_on_commit_callbacks() as queued:
        run = flag_run_create(lineage=lineage, chunk_size=2)
    assert len(queued) >= 1 and run.total == 5 and run.status == FlagRun.Status.QUEUED
    with pytest.raises(ReflagError, match="already being re-flagged"):
        flag_run_create(lineage=lineage)
    progress = []
    while flag_run_chunk(run_id=run.pk):
        run.refresh_from_db()
        progress.append(run.done)
    run.refresh_from_db()
    assert progress == [2, 4, 5] and run.status == FlagRun.Status.DONE and run.progress_percent == 100
    assert all(s.detector_version == DETECTOR_VERSION for s in Sample.objects.filter(lineage=lineage))
    # The two copies of ANSWER are one cluster; the first is its representative.
    [cluster] = selectors.duplicate_clusters(lineage=lineage)
    assert cluster.size == 2 and cluster.representative_id == samples[1].pk
    assert [m.pk for m in selectors.duplicate_cluster_members(cluster=cluster)] == [samples[1].pk, samples[3].pk]


def test_two_deliveries_of_one_chunk_count_it_once(lineage, monkeypatch):
    for _ in range(3):
        make_sample(lineage, flagged=False)
    run = flag_run_create(lineage=lineage, chunk_size=2)
    real = reflag.flagging.samples_flag
    calls = []

    def racing(*, sample_ids):
        calls.append(sample_ids)
        if len(calls) == 1:  # a second delivery of the same chunk runs and finishes first
            assert flag_run_chunk(run_id=run.pk) is True
        return real(sample_ids=sample_ids)

    monkeypatch.setattr(reflag.flagging, "samples_flag", racing)
    assert flag_run_chunk(run_id=run.pk) is False, "the late copy finds the cursor moved and queues nothing"
    run.refresh_from_db()
    assert calls[0] == calls[1] and run.done == 2 and run.cursor == calls[0][-1]


def test_a_new_threshold_takes_effect_after_reflagging(lineage):
    sample = make_sample(lineage, answer=ANSWER + " The Moon is made of green cheese.", flagged=False)
    assert Flag.Kind.HALLUCINATION in {f.kind for f in sample_flag(sample_id=sample.pk)}
    Lineage.objects.filter(pk=lineage.pk).update(hallucination_threshold=0.99)
    run = flag_run_create(lineage=lineage)
    while flag_run_chunk(run_id=run.pk):
        pass
    assert not Flag.objects.filter(sample=sample, kind=Flag.Kind.HALLUCINATION).exists()


def test_the_card_shows_the_cluster_and_the_highlighted_sentence(reviewer_client, lineage):
    # A three-sentence answer repeated with one invented sentence more: a near-duplicate (P 0.99) and a
    # hallucination. (A one-sentence answer plus a sentence as long is a different item to the pair model.)
    answer = (ANSWER + " It sits in the thylakoid membranes of the chloroplast. It reflects green light, which is "
              "why leaves look green.")
    first = make_sample(lineage, answer=answer, flagged=False)
    second = make_sample(lineage, question=first.question, answer=answer + " The Moon is made of green cheese.",
                         flagged=False)
    Lineage.objects.filter(pk=lineage.pk).update(duplicate_threshold=0.8)
    sample_flag(sample_id=first.pk)
    sample_flag(sample_id=second.pk)
    Sample.objects.filter(pk=first.pk).update(status=Sample.Status.ACCEPTED)
    html = reviewer_client.get(reverse("review"), {"lineage": lineage.slug}).content.decode()
    assert f'id="sample-{second.pk}"' in html
    assert f"Near-duplicate of sample {first.pk}" in html
    second.refresh_from_db()
    assert f'id="cluster-{second.cluster_id}"' in html and "2 samples" in html and "1 accepted" in html
    assert '<details class="sentence unsupported"' in html and "The Moon is made of green cheese." in html


def test_the_command_queues_a_run_and_refuses_an_unknown_lineage(lineage, capsys):
    from django.core.management import CommandError, call_command

    make_sample(lineage, flagged=False)
    call_command("reflag_lineage", lineage.slug, "--chunk-size", "10")
    run = FlagRun.objects.get(lineage=lineage)
    assert (run.total, run.chunk_size, run.status) == (1, 10, FlagRun.Status.QUEUED)
    assert f"re-flag run {run.pk} queued" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no lineage with slug 'nope'"):
        call_command("reflag_lineage", "nope")


def test_the_admin_shows_flagged_samples_and_starts_a_reflag(admin_client, lineage):
    sample = make_sample(lineage, answer=ANSWER, flagged=False)
    sample_flag(sample_id=sample.pk)
    assert admin_client.get(reverse("admin:curation_sample_change", args=[sample.pk])).status_code == 200
    response = admin_client.post(reverse("admin:curation_lineage_changelist"),
                                 {"action": "reflag", "_selected_action": [lineage.pk]}, follow=True)
    assert response.status_code == 200 and "re-flag run" in response.content.decode()
    assert admin_client.get(reverse("admin:curation_flagrun_changelist")).status_code == 200
    assert FlagRun.objects.filter(lineage=lineage).count() == 1
