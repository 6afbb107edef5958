"""Reviewer decisions: one wins, all are logged, and the queue serves risk first."""
import threading

import pytest
from django.db import connection

from curation.models import Review, Sample
from curation.selectors import review_queue_next, review_queue_stats
from curation.services.review import AlreadyDecided, ReviewError, sample_accept, sample_decide, sample_reject
from tests.factories import REVIEWER, make_flag, make_sample, make_user


def test_accepting_logs_who_decided_and_changes_the_status(lineage, reviewer):
    sample = make_sample(lineage)
    review = sample_accept(sample=sample, reviewer=reviewer)
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACCEPTED and sample.decided_at is not None
    assert (review.reviewer, review.decision) == (reviewer, Review.Decision.ACCEPT)


def test_a_second_decision_on_the_same_sample_is_refused(lineage, reviewer):
    sample = make_sample(lineage)
    sample_reject(sample=sample, reviewer=reviewer, reason="duplicate")
    with pytest.raises(AlreadyDecided, match="already decided"):
        sample_accept(sample=sample, reviewer=reviewer)
    assert Review.objects.filter(sample=sample).count() == 1


def test_an_unknown_decision_is_refused_by_name(lineage, reviewer):
    with pytest.raises(ReviewError, match="unknown decision 'maybe'"):
        sample_decide(sample=make_sample(lineage), reviewer=reviewer, decision="maybe")


def test_the_queue_serves_flagged_samples_first_and_skips_unflagged_ones(lineage, reviewer):
    plain = make_sample(lineage)
    make_sample(lineage, flagged=False)  # still being flagged: not ready for review
    risky = make_sample(lineage)
    make_flag(risky)
    assert review_queue_next(reviewer=reviewer, lineage=lineage) == risky
    sample_accept(sample=risky, reviewer=reviewer)
    assert review_queue_next(reviewer=reviewer, lineage=lineage) == plain
    stats = review_queue_stats(reviewer=reviewer, lineage=lineage)
    assert (stats.remaining, stats.waiting_for_flags, stats.decided_today) == (1, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_it_never_records_two_decisions_when_reviewers_race(lineage):
    """Two reviewers decide the same sample at the same moment on two real connections."""
    sample = make_sample(lineage)
    reviewers = [make_user("ann", REVIEWER), make_user("bob", REVIEWER)]
    barrier = threading.Barrier(2)
    results = []

    def decide(reviewer, decision):
        try:
            barrier.wait()
            sample_decide(sample=sample, reviewer=reviewer, decision=decision)
            results.append("ok")
        except AlreadyDecided:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(r, d)) for r, d in zip(reviewers, ["accept", "reject"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused"]
    assert Review.objects.filter(sample=sample).count() == 1
    sample.refresh_from_db()
    expected = {"accept": Sample.Status.ACCEPTED, "reject": Sample.Status.REJECTED}
    assert sample.status == expected[Review.objects.get(sample=sample).decision]
