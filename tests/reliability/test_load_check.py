"""The load test's verdict (bench.load.check_database) catches each failure it exists for.

A checker that always said "0" would let tests/reliability/test_load.py pass
whatever the server did; here each kind of damage is made by hand and must be
counted.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.load import check_database
from curation.models import Review, Sample
from curation.services.review import review_undo, sample_decide
from tests.factories import REVIEWER, make_lineage, make_sample, make_user


@pytest.fixture
def setting(db):
    lineage = make_lineage(passages=1)
    ann, bob = make_user("ann", REVIEWER), make_user("bob", REVIEWER)
    samples = [make_sample(lineage) for _ in range(3)]
    return lineage, ann, bob, samples


def client(user, *actions):
    return SimpleNamespace(actions=[(user.username, sample.pk, decision) for sample, decision in actions])


def test_decisions_and_undos_the_clients_saw_leave_nothing_to_report(setting):
    lineage, ann, bob, (first, second, third) = setting
    sample_decide(sample=first, reviewer=ann, decision="accept")
    sample_decide(sample=second, reviewer=bob, decision="reject", reason="duplicate")
    review_undo(reviewer=bob, lineage=lineage)

    check = check_database(lineage=lineage, reviewers=[client(ann, (first, "accept")),
                                                       client(bob, (second, "reject"), (second, "undo"))])

    assert (check["doubled"], check["lost"], check["unexpected"], check["status_mismatch"]) == (0, 0, 0, 0)


def test_a_decision_a_client_saw_but_the_log_lacks_is_lost(setting):
    lineage, ann, _, (first, second, _) = setting
    sample_decide(sample=first, reviewer=ann, decision="accept")

    check = check_database(lineage=lineage, reviewers=[client(ann, (first, "accept"), (second, "accept"))])

    assert check["lost"] == 1 and check["unexpected"] == 0


def test_a_decision_no_client_made_is_unexpected(setting):
    lineage, ann, bob, (first, second, _) = setting
    sample_decide(sample=first, reviewer=ann, decision="accept")
    sample_decide(sample=second, reviewer=bob, decision="accept")

    check = check_database(lineage=lineage, reviewers=[client(ann, (first, "accept"))])

    assert check["unexpected"] == 1 and check["lost"] == 0


def test_two_standing_decisions_on_one_sample_are_doubled(setting):
    lineage, ann, bob, (first, _, _) = setting
    sample_decide(sample=first, reviewer=ann, decision="accept")
    Review.objects.create(sample=first, reviewer=bob, decision="reject", reason="duplicate")  # past the guard

    check = check_database(lineage=lineage, reviewers=[client(ann, (first, "accept")),
                                                       client(bob, (first, "reject"))])

    assert check["doubled"] == 1
    assert check["status_mismatch"] == 1  # accepted, though one of its decisions says reject


def test_a_status_changed_without_a_decision_is_a_mismatch(setting):
    lineage, _, _, (first, _, _) = setting
    Sample.objects.filter(pk=first.pk).update(status=Sample.Status.ACCEPTED)

    check = check_database(lineage=lineage, reviewers=[])

    assert check["status_mismatch"] == 1 and check["examples"]["status_mismatch"] == [first.pk]
