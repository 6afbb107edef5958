"""Importing a lineage's real passages from an uploaded JSONL, CSV or Parquet file.

An upload becomes a PassageImport row holding the file's bytes (so that any
worker that reaches the database can read them) and a `curation.import_passages`
task on the `curation` queue. The task parses the file (`curation.imports`),
applies the passage rules of `curation.services.lineages` and writes the
passages in one transaction, reporting progress on a second connection.

All or nothing: without `skip_bad_lines` any bad row fails the import and
nothing is written; with it the good rows are written and the bad ones listed.
A worker that dies mid-import leaves nothing behind: its transaction is rolled
back, its claim goes stale, and `imports_requeue_stale` queues the import again.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.core.files import File
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from curation.imports import ImportFileError, RowError, check_content, format_for, parse_file
from curation.models import Lineage, PassageImport, SourcePassage
from curation.services.claims import claim, claims_release_dead, stale_ids
from curation.services.lineages import CorpusError, passage_build, passages_insert

log = logging.getLogger(__name__)


class ImportRequestError(ValueError):
    """An upload refused before it is stored; `too_large` maps to HTTP 413, the rest to 400."""

    def __init__(self, message: str, *, field: str = "file", too_large: bool = False):
        super().__init__(message)
        self.field = field
        self.too_large = too_large


def _conf(name: str) -> int:
    return settings.OUROBOROS[name]


def import_size_check(*, size: int) -> None:
    """Refuse a file over IMPORT_MAX_BYTES (the view also checks Content-Length before reading the body)."""
    limit = _conf("IMPORT_MAX_BYTES")
    if size > limit:
        raise ImportRequestError(f"the file is {size} bytes; the limit is {limit} bytes", too_large=True)


def import_create(*, lineage: Lineage, upload: File, skip_bad_lines: bool = False, user=None) -> PassageImport:
    """Store an uploaded file as a queued import and queue its task after commit.

    The checks that need no parsing happen here, so that the client hears at
    once: the extension, the size, an empty file, text that is not UTF-8 or a
    Parquet file without its magic bytes. Everything else is the task's.
    """
    filename = PurePath(upload.name or "").name[:255]
    try:
        fmt = format_for(filename)
    except ImportFileError as exc:
        raise ImportRequestError(str(exc)) from None
    import_size_check(size=upload.size or 0)
    data = b"".join(upload.chunks())
    import_size_check(size=len(data))
    try:
        check_content(fmt, data[:4096], data[-4:])
    except ImportFileError as exc:
        raise ImportRequestError(str(exc)) from None
    with transaction.atomic():
        job = PassageImport.objects.create(
            lineage=lineage, created_by=user if getattr(user, "pk", None) else None, filename=filename,
            format=fmt, skip_bad_lines=skip_bad_lines, data=data, size_bytes=len(data),
        )
        imports_queue(import_ids=[job.pk])
    return job


def imports_queue(*, import_ids: list[int]) -> None:
    from curation.tasks import import_passages

    for import_id in import_ids:
        transaction.on_commit(lambda import_id=import_id: import_passages.delay(import_id))


def _lease() -> timedelta:
    return timedelta(seconds=_conf("IMPORT_LEASE_SECONDS"))


def _claim(import_id: int) -> uuid.UUID | None:
    """Take the import with a conditional update; None when it is finished or someone else holds it."""
    return claim(PassageImport, import_id, lease=_lease(), rows_done=0)


class _ClaimLost(Exception):
    pass


class _Progress:
    """Progress and lease updates on a database connection of their own.

    The passages are written in one transaction; progress written inside it
    would be invisible until the end and lost with it. This connection commits
    each update at once, so a client polling the import sees rows_done grow.
    """

    def __init__(self, import_id: int, token: uuid.UUID):
        self.import_id = import_id
        self.token = token
        self.connection = connections.create_connection(DEFAULT_DB_ALIAS)

    def __call__(self, rows_done: int) -> None:
        now = timezone.now()
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {PassageImport._meta.db_table} SET rows_done = %s, claimed_until = %s, updated_at = %s "
                "WHERE id = %s AND claim_token = %s",
                [rows_done, now + _lease(), now, self.import_id, self.token],
            )

    def close(self) -> None:
        self.connection.close()


def _listed(errors: list[RowError]) -> list[dict]:
    return [error.as_dict() for error in errors[: _conf("IMPORT_MAX_ERRORS_LISTED")]]


def _finish_failed(import_id: int, token: uuid.UUID, errors: list[RowError], *, rows_total: int,
                   ignored_columns: list[str] | None = None) -> bool:
    return bool(PassageImport.objects.filter(pk=import_id, claim_token=token).update(
        status=PassageImport.Status.FAILED, errors=_listed(errors), errors_total=len(errors),
        rows_total=rows_total, rows_done=rows_total, ignored_columns=ignored_columns or [], data=b"",
        finished_at=timezone.now(), claim_token=None, claimed_until=None,
    ))


def import_run(*, import_id: int) -> bool:
    """Run one import. Running it twice is harmless: only one run can finish it.

    1. Claim the import (queued, or running with an expired claim); else do nothing.
    2. Parse the file and check every row against the passage rules. A problem
       with the whole file, or any bad row without skip_bad_lines, fails the
       import with every error listed (the first IMPORT_MAX_ERRORS_LISTED; the
       total counted) and nothing written.
    3. Record rows_total, then write the good rows in batches, inside one
       transaction; progress goes out on a second connection after each batch.
    4. In that same transaction, mark the import done, only if this run still
       holds the claim; otherwise roll everything back. Passages and "done"
       commit together, so a retry after a crash can neither double nor lose them.
    5. After commit, queue the embedding of the new passages.
    Returns True when this call finished the import.
    """
    token = _claim(import_id)
    if token is None:
        return False
    try:
        return _run_claimed(import_id, token)
    except Exception:
        # Hand the import back at once (nothing was written), so that the task's retry can claim it.
        PassageImport.objects.filter(pk=import_id, claim_token=token).update(
            status=PassageImport.Status.QUEUED, claim_token=None, claimed_until=None, rows_done=0,
        )
        raise


def _run_claimed(import_id: int, token: uuid.UUID) -> bool:
    job = PassageImport.objects.select_related("lineage").get(pk=import_id)
    try:
        parsed = parse_file(job.format, bytes(job.data), max_rows=_conf("IMPORT_MAX_ROWS"))
    except ImportFileError as exc:
        return _finish_failed(import_id, token, [RowError(exc.line, exc.field, str(exc))], rows_total=0)

    errors = list(parsed.errors)
    prepared: list[SourcePassage] = []
    for row in parsed.rows:
        try:
            prepared.append(passage_build(lineage=job.lineage, text=row.text, title=row.title))
        except CorpusError as exc:
            errors.append(RowError(row.line, "text", f"text {exc}"))
    errors.sort(key=lambda error: error.line)
    total = parsed.total
    if errors and not job.skip_bad_lines:
        return _finish_failed(import_id, token, errors, rows_total=total, ignored_columns=parsed.ignored_columns)

    unique, seen = [], set()
    for passage in prepared:
        if passage.content_hash not in seen:
            seen.add(passage.content_hash)
            unique.append(passage)
    handled = len(errors) + len(prepared) - len(unique)  # skipped rows and repeats within the file
    # The lease is renewed here (parsing may have taken a while) and then after each batch.
    if not PassageImport.objects.filter(pk=import_id, claim_token=token).update(
            rows_total=total, rows_done=handled, claimed_until=timezone.now() + _lease()):
        return False

    batch_size = _conf("IMPORT_BATCH_SIZE")
    progress = _Progress(import_id, token)
    try:
        with transaction.atomic():
            imported = 0
            for start in range(0, len(unique), batch_size):
                batch = unique[start : start + batch_size]
                imported += passages_insert(lineage_id=job.lineage_id, rows=batch)
                progress(handled + start + len(batch))
            finished = PassageImport.objects.filter(pk=import_id, claim_token=token).update(
                status=PassageImport.Status.DONE, imported=imported, duplicates=len(prepared) - imported,
                skipped=_listed(errors), skipped_total=len(errors), errors=[], errors_total=0,
                ignored_columns=parsed.ignored_columns, rows_total=total, rows_done=total, data=b"",
                finished_at=timezone.now(), claim_token=None, claimed_until=None,
            )
            if not finished:
                raise _ClaimLost()
            if imported:
                lineage_id = job.lineage_id
                transaction.on_commit(lambda: passages_embed_queue(lineage_id=lineage_id))
    except _ClaimLost:
        log.info("import %s: claim lost to another worker; rolled back, leaving it to them", import_id)
        return False
    finally:
        progress.close()
    return True


def passages_embed_queue(*, lineage_id: int) -> None:
    """Embed (and chunk) the lineage's new passages on the curation queue, for grounding."""
    from curation.tasks import embed_passages

    embed_passages.delay(lineage_id)


def import_fail(*, import_id: int, reason: str) -> None:
    """Record an import's final failure (retries exhausted, not a problem with the file)."""
    PassageImport.objects.filter(pk=import_id).filter(
        status__in=[PassageImport.Status.QUEUED, PassageImport.Status.RUNNING]
    ).update(
        status=PassageImport.Status.FAILED, errors=[{"line": None, "field": None, "error": reason[:2000]}],
        errors_total=1, data=b"", claim_token=None, claimed_until=None, finished_at=timezone.now(),
    )


def imports_release_dead() -> list[int]:
    """Queue again, at once, every import whose claim a dead process on this host holds (a worker starting)."""
    ids = claims_release_dead(PassageImport)
    with transaction.atomic():
        imports_queue(import_ids=ids)
    return ids


def imports_requeue_stale(*, idle_seconds: int = 300) -> list[int]:
    """Queue again every unfinished import nobody works on: an expired claim, or queued and untouched."""
    ids = stale_ids(PassageImport, idle_seconds=idle_seconds)
    with transaction.atomic():
        imports_queue(import_ids=ids)
    return ids
