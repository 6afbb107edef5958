"""Reviewer decisions and the queue's leases.

Every decision is a conditional update of one sample's status plus an
append-only Review row, so two decisions racing on one sample record exactly
one, and an undo is a new row that points at the decision it reverts.
"""
from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from curation import selectors
from curation.models import Flag, Generation, Lineage, Review, Sample, SourcePassage

MAX_EDIT_CHARS = 8000


class ReviewError(Exception):
    """A decision that cannot be recorded; the message is shown to the reviewer."""


class AlreadyDecided(ReviewError):
    pass


class LeasedElsewhere(ReviewError):
    pass


# ------------------------------------------------------------------ the queue


class Order:
    RISK = "risk"
    NOVEL = "novel"
    RANDOM = "random"
    OLDEST = "oldest"
    CHOICES = [(RISK, "Highest risk first"), (NOVEL, "Most novel first"), (RANDOM, "Random"), (OLDEST, "Oldest first")]


@dataclass(frozen=True)
class QueueFilter:
    """What a reviewer asked to see. `flag` is a Flag.Kind, "none" (unflagged) or "" (any)."""

    generation: int | None = None
    flag: str = ""
    min_risk: float | None = None
    max_risk: float | None = None
    order: str = Order.RISK
    cluster: int | None = None  # a near-duplicate cluster's id


def _open_generation_id(lineage: Lineage) -> int | None:
    """The one open generation's id, looked up once per lineage object. Filtering
    on it, rather than joining on generation status, keeps the queue's queries on
    the sample table's partial indexes."""
    if not hasattr(lineage, "_open_generation_id"):
        lineage._open_generation_id = Generation.objects.filter(
            lineage=lineage, status=Generation.Status.OPEN).values_list("id", flat=True).first()
    return lineage._open_generation_id


def queue_samples(*, lineage: Lineage, filters: QueueFilter) -> QuerySet[Sample]:
    """Pending, flagged samples of the lineage's open generation matching the filters (no lease check)."""
    return _queue(lineage.pk, _open_generation_id(lineage), filters)


def queue_count_samples(*, lineage: Lineage, filters: QueueFilter) -> QuerySet[Sample]:
    """The same samples as queue_samples, for counting: the open generation
    implies the lineage, so without other filters the count is an index-only
    scan of sample_queue_idx (generation, status, flagged_at)."""
    return _queue(None, _open_generation_id(lineage), filters)


def overlap_samples(*, lineage: Lineage, reviewer, filters: QueueFilter) -> QuerySet[Sample]:
    """Samples drawn for a second, blind review that this reviewer did not decide and nobody has yet."""
    return _overlap(lineage.pk, _open_generation_id(lineage), reviewer.pk, filters)


def _queue(lineage_id: int | None, generation_id: int | None, filters: QueueFilter) -> QuerySet[Sample]:
    samples = Sample.objects.filter(status=Sample.Status.PENDING, generation_id=generation_id,
                                    flagged_at__isnull=False)
    if lineage_id is not None:  # the queue's orders use indexes on (lineage, ...)
        samples = samples.filter(lineage_id=lineage_id)
    return _filtered(samples, filters)


def _overlap(lineage_id: int, generation_id: int | None, reviewer_id: int, filters: QueueFilter) -> QuerySet[Sample]:
    mine = Review.objects.filter(sample=OuterRef("pk"), reviewer_id=reviewer_id, undone_by__isnull=True).exclude(
        decision=Review.Decision.UNDO)
    second = Review.objects.filter(sample=OuterRef("pk"), overlap=True, undone_by__isnull=True)
    samples = Sample.objects.filter(
        lineage_id=lineage_id, double_review=True, status__in=[Sample.Status.ACCEPTED, Sample.Status.REJECTED],
        generation_id=generation_id,
    ).exclude(Exists(mine)).exclude(Exists(second))
    return _filtered(samples, filters)


def _filtered(samples: QuerySet[Sample], filters: QueueFilter) -> QuerySet[Sample]:
    if filters.cluster is not None:
        samples = samples.filter(cluster_id=filters.cluster)
    if filters.generation is not None:
        samples = samples.filter(generation__number=filters.generation)
    if filters.flag == "none":
        samples = samples.filter(~Exists(Flag.objects.filter(sample=OuterRef("pk"))))
    elif filters.flag:
        samples = samples.filter(Exists(Flag.objects.filter(sample=OuterRef("pk"), kind=filters.flag)))
    if filters.min_risk is not None:
        samples = samples.filter(risk__gte=filters.min_risk)
    if filters.max_risk is not None:
        samples = samples.filter(risk__lte=filters.max_risk)
    return samples


def _ordered(samples: QuerySet[Sample], order: str) -> QuerySet[Sample]:
    if order == Order.NOVEL:
        return samples.order_by("-novelty", "id")
    if order == Order.OLDEST:
        return samples.order_by("id")
    if order == Order.RANDOM:
        # A random starting point in id order: an index scan, not a sort of the whole queue.
        bounds = samples.order_by("id").values_list("id", flat=True)
        first, last = bounds.first(), samples.order_by("-id").values_list("id", flat=True).first()
        if first is None:
            return samples.order_by("id")
        pivot = random.randint(first, last)
        after = samples.filter(id__gte=pivot).order_by("id")
        return after if after.exists() else samples.order_by("id")
    return samples.order_by("-risk", "id")


# A card shows every column but the vectors, which are large and only the detectors read.
CARD_DEFERRED = ("embedding", "minhash", "minhash_bands")


def _compiled(queryset: QuerySet) -> tuple[str, list]:
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def _card_columns(alias: str) -> str:
    return ", ".join(f'{alias}."{f.column}"' for f in Sample._meta.concrete_fields if f.name not in CARD_DEFERRED)


def card_from_row(sample: Sample, *, lineage: Lineage, generation: tuple[int, str], passage: tuple[int, str, str],
                  flags: list[dict]) -> Sample:
    """Attach what a card shows to a sample read with its card columns, so the template reads no more rows."""
    sample.lineage = lineage
    sample.generation = Generation.from_db("default", ["id", "lineage_id", "number", "status"],
                                           [sample.generation_id, lineage.pk, *generation])
    sample.passage = SourcePassage.from_db("default", ["id", "lineage_id", "title", "text"],
                                           [sample.passage_id, lineage.pk, *passage])
    rows = [Flag.from_db("default", ["id", "sample_id", "kind", "score", "evidence", "detector_version"],
                         [f["id"], sample.pk, f["kind"], f["score"], f["evidence"], f["detector_version"]])
            for f in flags]
    cached = Flag.objects.filter(sample=sample).order_by("kind")
    cached._result_cache, cached._prefetch_done = rows, True
    sample._prefetched_objects_cache = {"flags": cached}
    return sample


@dataclass(frozen=True)
class ReviewCard:
    """The next card and what the page shows around it, read in the lease's statement."""

    sample: Sample | None
    stats: "selectors.QueueStats | None"
    cluster: "selectors.ClusterSummary | None"


def sample_lease_next(*, reviewer, lineage: Lineage, filters: QueueFilter = QueueFilter(),
                      exclude_ids: tuple[int, ...] = ()) -> Sample | None:
    """Lease the reviewer their next card and return it, ready to show (see review_card_next)."""
    return _lease(reviewer=reviewer, lineage=lineage, filters=filters, exclude_ids=exclude_ids, extras=False).sample


def review_card_next(*, reviewer, lineage: Lineage, filters: QueueFilter = QueueFilter(),
                     exclude_ids: tuple[int, ...] = ()) -> ReviewCard:
    """Lease the next card, and read the queue's counts and the card's cluster in the same statement.

    The counts are read in the statement's snapshot, which is the one the lease
    is taken in; leasing changes no status, so they are what a separate read
    would say. With no card to lease the counts take one more statement.
    """
    card = _lease(reviewer=reviewer, lineage=lineage, filters=filters, exclude_ids=exclude_ids, extras=True)
    if card.sample is None:
        stats, _ = selectors.review_card_extras(reviewer=reviewer, lineage=lineage,
                                                samples=queue_count_samples(lineage=lineage, filters=filters))
        return ReviewCard(None, stats, None)
    return card


def _lease(*, reviewer, lineage: Lineage, filters: QueueFilter, exclude_ids: tuple[int, ...],
           extras: bool) -> ReviewCard:
    """Lease the reviewer their next card, in one statement (see _lease_statement)."""
    key = dict(lineage_id=lineage.pk, generation_id=_open_generation_id(lineage),
               overlap=lineage.overlap_fraction > 0, lease_seconds=lineage.lease_seconds, reviewer_id=reviewer.pk,
               filters=filters, exclude_ids=tuple(exclude_ids),
               day_start=timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) if extras else None)
    # A random order picks its starting point with queries of its own: not a statement to keep.
    build = _lease_statement.__wrapped__ if filters.order == Order.RANDOM else _lease_statement
    statement, params = build(**key)
    rows = list(Sample.objects.raw(statement, params))
    if not rows:
        return ReviewCard(None, None, None)
    sample = rows[0]
    sample.leased_to = reviewer
    card_from_row(sample, lineage=lineage, generation=(sample.card_generation_number, sample.card_generation_status),
                  passage=(sample.card_passage_title, sample.card_passage_text), flags=json.loads(sample.card_flags))
    if not extras:
        return ReviewCard(sample, None, None)
    stats, cluster = selectors.card_extras_from_row(
        sample, (sample.stats_remaining, sample.stats_unflagged, sample.stats_today, sample.cluster_members))
    return ReviewCard(sample, stats, cluster)


@functools.lru_cache(maxsize=1024)
def _lease_statement(*, lineage_id: int, generation_id: int | None, overlap: bool, lease_seconds: int,
                     reviewer_id: int, filters: QueueFilter, exclude_ids: tuple[int, ...], day_start) -> tuple[str, tuple]:
    """The lease's SQL and parameters. Everything they depend on is an argument,
    and times are the database's STATEMENT_TIMESTAMP(), so a reviewer's next
    statement is built once, not on every card (building it through the ORM
    costs more than running it).

    1. A card the reviewer already holds comes back first (a reload shows the same card).
    2. Otherwise the first matching sample that nobody holds (or whose lease
       expired) is locked with SKIP LOCKED, so two reviewers asking at the same
       moment get different samples, and leased for the lineage's lease time.
       Second reviews come before the pending queue: they are few, and agreement
       can only be measured on them.
    3. The same UPDATE ... RETURNING reads the card: its columns (not the
       vectors), its generation's number, its passage and its flags, and with
       `day_start` the queue's counts (decided today: since then) and the card's cluster.

    Each step is a CTE that PostgreSQL evaluates only when the one before gave
    no row, so a held card locks nothing else. The statement commits without
    waiting for the WAL flush (synchronous_commit off for this transaction
    only): a lease lost in a crash only frees the card again, while decisions
    keep the synchronous commit.
    """
    now = Now()
    pending = _queue(lineage_id, generation_id, filters).exclude(id__in=exclude_ids)
    # Second reviews exist only where the lineage draws them; skip their queries otherwise.
    second = _overlap(lineage_id, generation_id, reviewer_id, filters).exclude(id__in=exclude_ids) if overlap else None
    eligible = pending if second is None else (pending | second)
    queues = [(pending, filters.order)] if second is None else [(second, Order.OLDEST), (pending, filters.order)]

    held_sql, params = _compiled(eligible.filter(leased_to_id=reviewer_id, lease_expires_at__gt=now)
                                 .order_by("id").values("id")[:1])
    ctes, union = [f"held AS ({held_sql})"], ["SELECT id, true AS held FROM held"]
    for i, (samples, order) in enumerate(queues):
        free = samples.exclude(leased_to__isnull=False, lease_expires_at__gt=now)
        sql, more = _compiled(_ordered(free, order).values("id")[:1])
        ctes.append(f'pick{i} AS ({sql} FOR UPDATE OF "curation_sample" SKIP LOCKED)')
        union.append(f"SELECT id, false FROM pick{i}")
        params += more
    ctes.append(f"chosen AS ({' UNION ALL '.join(union)} LIMIT 1)")
    ctes.append("async_commit AS (SELECT set_config('synchronous_commit', 'off', true))")
    params += [reviewer_id, lease_seconds]
    extra_columns = ""
    if day_start is not None:
        stats_sql, more = selectors.review_stats_sql(reviewer_id=reviewer_id, lineage_id=lineage_id,
                                                     samples=_queue(None, generation_id, filters),
                                                     day_start=day_start)
        extra_columns = f", {stats_sql}, {selectors.cluster_members_sql('s')}"
        params += more
    statement = f"""
        WITH {", ".join(ctes)}
        UPDATE curation_sample AS s
        SET leased_to_id = %s,
            lease_expires_at = CASE WHEN chosen.held THEN s.lease_expires_at
                                    ELSE STATEMENT_TIMESTAMP() + make_interval(secs => %s) END
        FROM chosen, async_commit, curation_generation AS g, curation_sourcepassage AS p
        WHERE s.id = chosen.id AND g.id = s.generation_id AND p.id = s.passage_id
        RETURNING {_card_columns("s")}, g.number AS card_generation_number, g.status AS card_generation_status,
            p.title AS card_passage_title, p.text AS card_passage_text,
            (SELECT COALESCE(json_agg(json_build_object('id', f.id, 'kind', f.kind, 'score', f.score,
                                                        'evidence', f.evidence,
                                                        'detector_version', f.detector_version)
                                      ORDER BY f.kind), '[]')::text
             FROM curation_flag AS f WHERE f.sample_id = s.id) AS card_flags{extra_columns}"""
    return statement, tuple(params)


def sample_release(*, sample: Sample, reviewer) -> bool:
    """Give a card back (skip): anyone may then be shown it."""
    return bool(
        Sample.objects.filter(pk=sample.pk, leased_to=reviewer).update(leased_to=None, lease_expires_at=None)
    )


# ------------------------------------------------------------------ decisions


def _lock_open_generation(generation_id: int, sample_pk: int) -> None:
    """A share lock on the generation: decisions go on in parallel, but not
    while a training set is built from it (the builder takes FOR UPDATE)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM curation_generation WHERE id = %s FOR SHARE", [generation_id])
        row = cursor.fetchone()
    if row is None or row[0] != Generation.Status.OPEN:
        raise ReviewError(f"sample {sample_pk} belongs to a closed generation")


def _check_reason(lineage: Lineage, reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise ReviewError("a rejection needs a reason")
    allowed = lineage.reject_reasons or []
    head = reason.split(":", 1)[0].strip()
    if allowed and head not in allowed:
        raise ReviewError(f"unknown reject reason {head!r}; this lineage uses: {', '.join(allowed)}")
    if head == "other" and not reason.split(":", 1)[1:]:
        raise ReviewError("'other' needs a few words of explanation")
    return reason[:500]


def sample_decide(*, sample: Sample, reviewer, decision: str, reason: str = "", edited_answer: str = "",
                  bulk: bool = False, overlap: bool = False) -> Review:
    """Record a decision on a pending sample: accept, reject (with a reason) or edit-and-accept.

    The status changes with a conditional update that touches only the sample's
    row, so PostgreSQL re-checks `status` after waiting for a concurrent
    decision: exactly one wins, the other is told. A card leased to someone
    else cannot be decided by another reviewer until the lease runs out.
    """
    if decision not in (Review.Decision.ACCEPT, Review.Decision.REJECT, Review.Decision.EDIT):
        raise ReviewError(f"unknown decision {decision!r}; use accept, reject or edit")
    lineage = sample.lineage
    if decision == Review.Decision.REJECT:
        reason = _check_reason(lineage, reason)
    else:
        reason = ""
    if decision == Review.Decision.EDIT:
        edited_answer = edited_answer.strip()
        if not edited_answer:
            raise ReviewError("the edited answer is empty")
        if len(edited_answer) > MAX_EDIT_CHARS:
            raise ReviewError(f"the edited answer is over {MAX_EDIT_CHARS} characters")
    if overlap:
        return _second_review(sample=sample, reviewer=reviewer, decision=decision, reason=reason,
                              edited_answer=edited_answer)
    new_status = Sample.Status.REJECTED if decision == Review.Decision.REJECT else Sample.Status.ACCEPTED
    now = timezone.now()
    # One statement, so one round trip and no transaction block: the share lock on
    # the open generation (decisions go on in parallel, but not while a training
    # set is built from it: the builder takes FOR UPDATE), the conditional update
    # of the sample's own row, and the log row, which exists only if the update
    # changed a row. PostgreSQL re-checks the update's conditions on the newest
    # row version after waiting for a concurrent decision, so exactly one wins.
    edit = ("original_answer = CASE WHEN original_answer = '' THEN answer ELSE original_answer END, answer = %s, "
            if decision == Review.Decision.EDIT else "")
    lease = "" if bulk else "AND (leased_to_id IS NULL OR leased_to_id = %s OR lease_expires_at <= %s)"
    params = [sample.generation_id, *([edited_answer] if edit else []), new_status, now, sample.pk,
              *([] if bulk else [reviewer.pk, now]), reviewer.pk, decision, reason, edited_answer, bulk, now]
    with connection.cursor() as cursor:
        cursor.execute(f"""
            WITH open_generation AS (
                SELECT id FROM curation_generation WHERE id = %s AND status = 'open' FOR SHARE
            ), decided AS (
                UPDATE curation_sample
                SET {edit}status = %s, decided_at = %s, leased_to_id = NULL, lease_expires_at = NULL
                WHERE id = %s AND status = 'pending' AND EXISTS (SELECT 1 FROM open_generation) {lease}
                RETURNING id
            )
            INSERT INTO curation_review (sample_id, reviewer_id, decision, reason, edited_answer, bulk, overlap,
                                         created_at)
            SELECT id, %s, %s, %s, %s, %s, false, %s FROM decided
            RETURNING id""", params)
        row = cursor.fetchone()
    if row is None:
        _refuse(sample)
    review = Review(id=row[0], sample=sample, reviewer=reviewer, decision=decision, reason=reason,
                    edited_answer=edited_answer, bulk=bulk, overlap=False, created_at=now)
    review._state.adding, review._state.db = False, "default"
    return review


def _refuse(sample: Sample):
    """Say why a decision changed nothing (read after the fact: this is the rare path)."""
    current = (Sample.objects.filter(pk=sample.pk)
               .values_list("status", "leased_to__username", "generation__status").first())
    if current is None:
        raise ReviewError(f"sample {sample.pk} no longer exists")
    status, holder, generation_status = current
    if generation_status != Generation.Status.OPEN:
        raise ReviewError(f"sample {sample.pk} belongs to a closed generation")
    if status != Sample.Status.PENDING:
        raise AlreadyDecided(f"sample {sample.pk} was already decided ({status})")
    raise LeasedElsewhere(f"sample {sample.pk} is being reviewed by {holder}")


def _second_review(*, sample: Sample, reviewer, decision: str, reason: str, edited_answer: str) -> Review:
    """A blind second decision on a double-review sample: logged for agreement, status untouched."""
    with transaction.atomic():
        _lock_open_generation(sample.generation_id, sample.pk)
        locked = Sample.objects.select_for_update().get(pk=sample.pk)  # one second review wins
        if not locked.double_review or locked.status == Sample.Status.PENDING:
            raise ReviewError(f"sample {sample.pk} is not waiting for a second review")
        active = Review.objects.filter(sample=locked, undone_by__isnull=True).exclude(decision=Review.Decision.UNDO)
        if active.filter(overlap=True).exists():
            raise AlreadyDecided(f"sample {sample.pk} already has its second review")
        if active.filter(reviewer=reviewer).exists():
            raise ReviewError(f"you already decided sample {sample.pk}; a second review needs another reviewer")
        Sample.objects.filter(pk=sample.pk, leased_to=reviewer).update(leased_to=None, lease_expires_at=None)
        return Review.objects.create(sample=locked, reviewer=reviewer, decision=decision, reason=reason,
                                     edited_answer=edited_answer, overlap=True)


def sample_accept(*, sample: Sample, reviewer) -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.ACCEPT)


def sample_reject(*, sample: Sample, reviewer, reason: str) -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.REJECT, reason=reason)


def review_undo(*, reviewer, lineage: Lineage) -> Review | None:
    """Revert the reviewer's latest decision that still stands; None when there is none.

    The sample goes back to pending (an edit's original answer is restored) and
    is leased back to the reviewer, so it is the next card they see. Pressed
    again, it reverts the decision before that.
    """
    candidates = (
        Review.objects.filter(reviewer=reviewer, sample__lineage=lineage, undone_by__isnull=True, bulk=False,
                              decision__in=[Review.Decision.ACCEPT, Review.Decision.REJECT, Review.Decision.EDIT],
                              sample__generation__status=Generation.Status.OPEN)
        .select_related("sample")
        .order_by("-created_at", "-id")[:20]
    )
    for review in candidates:
        sample = review.sample
        if review.overlap:
            with transaction.atomic():
                Sample.objects.filter(pk=sample.pk).update(
                    leased_to=reviewer, lease_expires_at=timezone.now() + timedelta(seconds=lineage.lease_seconds))
                return Review.objects.create(sample=sample, reviewer=reviewer, decision=Review.Decision.UNDO,
                                             undoes=review, overlap=True)
        expected = Sample.Status.REJECTED if review.decision == Review.Decision.REJECT else Sample.Status.ACCEPTED
        with transaction.atomic():
            _lock_open_generation(sample.generation_id, sample.pk)
            reverted = Sample.objects.filter(pk=sample.pk, status=expected).update(
                status=Sample.Status.PENDING, decided_at=None, leased_to=reviewer,
                lease_expires_at=timezone.now() + timedelta(seconds=lineage.lease_seconds),
            )
            if not reverted:
                continue  # decided again since (by someone else): not this reviewer's to undo
            if review.decision == Review.Decision.EDIT:
                original = Sample.objects.filter(pk=sample.pk).values_list("original_answer", flat=True).first()
                Sample.objects.filter(pk=sample.pk).update(answer=original, original_answer="")
            return Review.objects.create(sample=sample, reviewer=reviewer, decision=Review.Decision.UNDO,
                                         undoes=review)
    return None


def samples_bulk_decide(*, samples: QuerySet[Sample], reviewer, decision: str, reason: str = "",
                        expected_count: int) -> int:
    """Decide a whole selection, after a confirmation that named its size.

    Refuses when the selection no longer has `expected_count` samples (someone
    decided some in between), so a curator never decides more than they saw.
    """
    if decision not in (Review.Decision.ACCEPT, Review.Decision.REJECT):
        raise ReviewError("bulk actions accept or reject")
    ids = list(samples.filter(status=Sample.Status.PENDING).order_by("id").values_list("id", flat=True))
    if len(ids) != expected_count:
        raise ReviewError(f"the selection now has {len(ids)} samples, not the {expected_count} you confirmed; "
                          "look again before deciding")
    decided = 0
    for sample in Sample.objects.filter(id__in=ids).select_related("lineage").order_by("id"):
        try:
            sample_decide(sample=sample, reviewer=reviewer, decision=decision, reason=reason, bulk=True)
            decided += 1
        except AlreadyDecided:
            continue
    return decided
