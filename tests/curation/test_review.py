"""Reviewer decisions: leases, one decision wins, undo, edit, bulk, and the queue's orders."""
import threading

import pytest
from django.db import connection

from curation.models import Review, Sample
from curation.selectors import review_queue_stats
from curation.services.review import (
    AlreadyDecided,
    LeasedElsewhere,
    Order,
    QueueFilter,
    ReviewError,
    queue_samples,
    review_undo,
    sample_accept,
    sample_decide,
    sample_lease_next,
    sample_reject,
    sample_release,
    samples_bulk_decide,
)
from tests.factories import REVIEWER, make_flag, make_sample, make_user


@pytest.fixture
def other_reviewer(db):
    return make_user("otto", REVIEWER)


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


@pytest.mark.parametrize("reason,message", [
    ("", "needs a reason"),
    ("boring", "unknown reject reason 'boring'; this lineage uses: hallucination, duplicate"),
    ("other", "'other' needs a few words"),
])
def test_a_rejection_needs_a_reason_from_the_lineage_taxonomy(lineage, reviewer, reason, message):
    sample = make_sample(lineage)
    with pytest.raises(ReviewError, match=message):
        sample_reject(sample=sample, reviewer=reviewer, reason=reason)
    sample.refresh_from_db()
    assert sample.status == Sample.Status.PENDING


def test_other_with_text_is_a_valid_reason(lineage, reviewer):
    review = sample_reject(sample=make_sample(lineage), reviewer=reviewer, reason="other:  cites a fake study ")
    assert review.reason == "other: cites a fake study"


def test_an_unknown_decision_is_refused_by_name(lineage, reviewer):
    with pytest.raises(ReviewError, match="unknown decision 'maybe'"):
        sample_decide(sample=make_sample(lineage), reviewer=reviewer, decision="maybe")


def test_editing_accepts_the_new_text_and_keeps_the_original(lineage, reviewer):
    sample = make_sample(lineage, answer="Mitochondria make sugar.")
    review = sample_decide(sample=sample, reviewer=reviewer, decision="edit",
                           edited_answer="Mitochondria release energy from sugar.")
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACCEPTED
    assert sample.answer == "Mitochondria release energy from sugar."
    assert sample.original_answer == "Mitochondria make sugar."
    assert review.edited_answer == sample.answer
    with pytest.raises(ReviewError, match="edited answer is empty"):
        sample_decide(sample=make_sample(lineage), reviewer=reviewer, decision="edit", edited_answer="  ")


def test_undo_reverts_the_latest_decisions_in_turn_and_logs_each_undo(lineage, reviewer):
    first, second = make_sample(lineage, answer="Original first."), make_sample(lineage)
    sample_decide(sample=first, reviewer=reviewer, decision="edit", edited_answer="Edited first.")
    sample_reject(sample=second, reviewer=reviewer, reason="duplicate")

    undo = review_undo(reviewer=reviewer, lineage=lineage)
    assert undo.sample == second and undo.undoes.decision == Review.Decision.REJECT
    second.refresh_from_db()
    assert second.status == Sample.Status.PENDING and second.leased_to == reviewer

    undo = review_undo(reviewer=reviewer, lineage=lineage)
    assert undo.sample == first
    first.refresh_from_db()
    assert (first.status, first.answer, first.original_answer) == (Sample.Status.PENDING, "Original first.", "")

    assert review_undo(reviewer=reviewer, lineage=lineage) is None
    log = list(Review.objects.filter(reviewer=reviewer).order_by("id").values_list("decision", flat=True))
    assert log == ["edit", "reject", "undo", "undo"], "the log is append-only"


def test_undo_leaves_a_decision_someone_else_made_since_alone(lineage, reviewer, other_reviewer):
    sample = make_sample(lineage)
    sample_accept(sample=sample, reviewer=reviewer)
    review_undo(reviewer=reviewer, lineage=lineage)
    sample.refresh_from_db()
    sample.leased_to = None
    sample.save()
    sample_reject(sample=sample, reviewer=other_reviewer, reason="unsafe")
    assert review_undo(reviewer=reviewer, lineage=lineage) is None
    sample.refresh_from_db()
    assert sample.status == Sample.Status.REJECTED


def test_the_queue_serves_highest_risk_first_and_skips_unflagged_ones(lineage, reviewer):
    plain = make_sample(lineage)
    make_sample(lineage, flagged=False)  # still being flagged: not ready for review
    risky = make_sample(lineage, risk=0.9)
    make_flag(risky, score=0.9)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == risky
    sample_accept(sample=risky, reviewer=reviewer)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == plain
    stats = review_queue_stats(reviewer=reviewer, lineage=lineage,
                               samples=queue_samples(lineage=lineage, filters=QueueFilter()))
    assert (stats.remaining, stats.waiting_for_flags, stats.decided_today) == (1, 1, 1)


@pytest.mark.parametrize("order,expected", [(Order.RISK, "b"), (Order.NOVEL, "c"), (Order.OLDEST, "a")])
def test_each_order_picks_its_first_sample(lineage, reviewer, order, expected):
    samples = {
        "a": make_sample(lineage, risk=0.1, novelty=0.2),
        "b": make_sample(lineage, risk=0.8, novelty=0.1),
        "c": make_sample(lineage, risk=0.3, novelty=0.9),
    }
    picked = sample_lease_next(reviewer=reviewer, lineage=lineage, filters=QueueFilter(order=order))
    assert picked == samples[expected]


def test_random_order_serves_every_sample_eventually(lineage, reviewer):
    made = {make_sample(lineage).pk for _ in range(5)}
    seen = set()
    for _ in range(5):
        sample = sample_lease_next(reviewer=reviewer, lineage=lineage, filters=QueueFilter(order=Order.RANDOM))
        seen.add(sample.pk)
        sample_accept(sample=sample, reviewer=reviewer)
    assert seen == made


def test_filters_select_by_flag_kind_and_risk_range(lineage, reviewer):
    dup = make_sample(lineage, risk=0.95)
    make_flag(dup, kind="near_duplicate", score=0.95)
    hal = make_sample(lineage, risk=0.5)
    make_flag(hal, kind="hallucination", score=0.5)
    clean = make_sample(lineage)

    def ids(**filters):
        return set(queue_samples(lineage=lineage, filters=QueueFilter(**filters)).values_list("id", flat=True))

    assert ids(flag="near_duplicate") == {dup.pk}
    assert ids(flag="hallucination") == {hal.pk}
    assert ids(flag="none") == {clean.pk}
    assert ids(min_risk=0.4, max_risk=0.9) == {hal.pk}


def test_a_leased_card_is_not_shown_to_a_second_reviewer(lineage, reviewer, other_reviewer):
    first, second = make_sample(lineage), make_sample(lineage)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == first
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == first, "a reload shows the same card"
    assert sample_lease_next(reviewer=other_reviewer, lineage=lineage) == second
    with pytest.raises(LeasedElsewhere, match="being reviewed by rita"):
        sample_accept(sample=first, reviewer=other_reviewer)


def test_a_skip_releases_the_lease_and_an_expired_lease_frees_the_card(lineage, reviewer, other_reviewer):
    from datetime import timedelta

    from django.utils import timezone

    sample = make_sample(lineage)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == sample
    assert sample_release(sample=sample, reviewer=reviewer) is True
    assert sample_lease_next(reviewer=other_reviewer, lineage=lineage) == sample
    Sample.objects.filter(pk=sample.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == sample


def test_bulk_decides_the_selection_only_after_the_count_is_confirmed(lineage, curator):
    for _ in range(3):
        make_flag(make_sample(lineage, risk=0.97), score=0.97)
    untouched = make_sample(lineage)
    selection = queue_samples(lineage=lineage, filters=QueueFilter(flag="near_duplicate"))
    with pytest.raises(ReviewError, match="now has 3 samples, not the 4 you confirmed"):
        samples_bulk_decide(samples=selection, reviewer=curator, decision="reject", reason="duplicate",
                            expected_count=4)
    assert samples_bulk_decide(samples=selection, reviewer=curator, decision="reject", reason="duplicate",
                               expected_count=3) == 3
    assert Review.objects.filter(bulk=True, decision="reject", reason="duplicate").count() == 3
    untouched.refresh_from_db()
    assert untouched.status == Sample.Status.PENDING


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
            sample_decide(sample=sample, reviewer=reviewer, decision=decision, reason="unsafe")
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


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_asking_at_once_get_different_cards(lineage):
    for _ in range(2):
        make_sample(lineage)
    reviewers = [make_user("cat", REVIEWER), make_user("dan", REVIEWER)]
    barrier = threading.Barrier(2)
    leased = []

    def ask(reviewer):
        try:
            barrier.wait()
            leased.append(sample_lease_next(reviewer=reviewer, lineage=lineage).pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(r,)) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(leased)) == 2


def test_a_second_blind_review_is_logged_without_changing_the_status(lineage, reviewer, other_reviewer):
    lineage.overlap_fraction = 0.2
    lineage.save()
    sample = make_sample(lineage, double_review=True)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) == sample
    sample_accept(sample=sample, reviewer=reviewer)
    assert sample_lease_next(reviewer=reviewer, lineage=lineage) is None, "never your own sample twice"
    assert sample_lease_next(reviewer=other_reviewer, lineage=lineage) == sample
    second = sample_decide(sample=sample, reviewer=other_reviewer, decision="reject", reason="unsafe", overlap=True)
    assert second.overlap is True
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACCEPTED, "the first decision stands"
    third = make_user("tess", REVIEWER)
    assert sample_lease_next(reviewer=third, lineage=lineage) is None, "one second review is enough"
    with pytest.raises(AlreadyDecided, match="already has its second review"):
        sample_decide(sample=sample, reviewer=third, decision="accept", overlap=True)


def test_agreement_is_cohens_kappa_per_reviewer_pair(lineage, reviewer, other_reviewer):
    from curation.selectors import reviewer_agreement

    # rita then otto: agree, agree, disagree, agree on four samples.
    for first, second in [("accept", "accept"), ("reject", "reject"), ("accept", "reject"), ("accept", "accept")]:
        sample = make_sample(lineage, double_review=True)
        sample_decide(sample=sample, reviewer=reviewer, decision=first, reason="duplicate")
        sample_decide(sample=sample, reviewer=other_reviewer, decision=second, reason="duplicate", overlap=True)
    [row] = reviewer_agreement(lineage=lineage)
    # p_o = 3/4; rita accepts 3/4, otto accepts 2/4: p_e = 3/4*2/4 + 1/4*2/4 = 1/2; kappa = (0.75-0.5)/0.5
    assert row["pair"] == ("otto", "rita") and row["n"] == 4
    assert row["agreement"] == pytest.approx(0.75) and row["kappa"] == pytest.approx(0.5)
