"""Signals curation sends, for other apps to act on without curation importing them.

`training_set_published(sender=TrainingSet, training_set=<TrainingSet>)` is sent
inside the transaction that publishes the set (its manifest is written and
stored). A receiver that writes rows does so in that transaction, so its work
is committed exactly when the publication is, inside a savepoint of its own
(`transaction.atomic()`) so that its failure cannot break the publishing transaction;
it queues tasks with
`transaction.on_commit`. Receivers are called with `send_robust`: one that
fails is logged and cannot undo the publication.
"""
from django.dispatch import Signal

training_set_published = Signal()
