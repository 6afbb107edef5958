"""Writing a training set's files: chat-messages JSONL, Alpaca JSONL and Parquet.

Each format is one TrainingSetExport row, written by the `curation.export_training_set`
task (never in a request) in batches that record progress. When the last export
is done the set is published: its manifest (composition, counts, the policy in
force and the sha256 of every file) is written next to the files and stored.

Record shapes
- synthetic (an accepted sample): user = the tutor's question, assistant = the answer;
- real (a source passage): user = "Tell me about <title>." (or a generic request when
  the passage has no title), assistant = the passage text. The passage is the real,
  human-written text; the user turn only gives it the chat shape every record shares.
The JSONL files hold exactly the shapes their consumers expect (OpenAI fine-tuning
and TRL's SFT for chat messages; Alpaca's instruction/input/output). Where each
record came from is in the Parquet file's columns and the manifest's composition.

Records are in a seeded order, the same in every file, so the same seed and the
same inputs give byte-identical files (a rebuild can prove it: `training_set_verify`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from curation.models import Sample, SourcePassage, TrainingSet, TrainingSetExport
from curation.services.claims import claim, claims_release_dead, stale_ids

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
FILE_SUFFIX = {
    TrainingSetExport.Format.CHAT: "chat.jsonl",
    TrainingSetExport.Format.ALPACA: "alpaca.jsonl",
    TrainingSetExport.Format.PARQUET: "parquet",
}
FORMAT_NAME = {
    TrainingSetExport.Format.CHAT: "chat-messages-jsonl",
    TrainingSetExport.Format.ALPACA: "alpaca-jsonl",
    TrainingSetExport.Format.PARQUET: "parquet",
}
CONTENT_TYPE = {
    TrainingSetExport.Format.CHAT: "application/jsonl",
    TrainingSetExport.Format.ALPACA: "application/jsonl",
    TrainingSetExport.Format.PARQUET: "application/vnd.apache.parquet",
}
MANIFEST_NAME = "manifest.json"


class ExportError(Exception):
    """An export that cannot be written or served; the message says which and why."""


@dataclass(frozen=True)
class Record:
    origin: str  # "synthetic" or "real"
    source_generation: int  # 0 for real data
    sample_id: int | None
    passage_id: int | None
    prompt: str
    response: str


# A lineage slug becomes a folder and a file name: only the characters of
# Django's validate_slug, and short enough that the longest file name plus the
# temporary file's affixes stays under the 255-byte limit of a file name.
_NAME_PART = re.compile(r"[-a-zA-Z0-9_]+\Z")
MAX_SLUG_CHARS = 200
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4000


def _check_slug(slug: str) -> None:
    if not isinstance(slug, str) or not _NAME_PART.match(slug):
        raise ExportError(f"lineage slug {slug!r} cannot name an export file: only letters, digits, '-' and '_' "
                          f"are allowed")
    if len(slug) > MAX_SLUG_CHARS:
        raise ExportError(f"lineage slug {slug[:40]!r}… is {len(slug)} characters; export names allow at most "
                          f"{MAX_SLUG_CHARS}")


def export_folder(*, slug: str, number: int) -> str:
    """A set's folder relative to EXPORT_ROOT; ExportError when the slug could not name it safely."""
    _check_slug(slug)
    if not isinstance(number, int) or number < 0:
        raise ExportError(f"generation number {number!r} must be a whole number, 0 or more")
    return f"{slug}/generation-{number:03d}"


def export_relative_path(*, folder: str, slug: str, number: int, fmt: str) -> str:
    """One export file's path relative to EXPORT_ROOT; every part is checked, none can climb out."""
    _check_slug(slug)
    parts = folder.split("/") if isinstance(folder, str) else [folder]
    if not all(isinstance(part, str) and _NAME_PART.match(part) for part in parts):
        raise ExportError(f"export folder {folder!r} must be relative, made of letters, digits, '-' and '_' "
                          f"parts separated by '/'")
    if fmt not in FILE_SUFFIX:
        raise ExportError(f"unknown export format {fmt!r}; formats are {', '.join(FILE_SUFFIX)}")
    return f"{folder}/{slug}-generation-{number:03d}.{FILE_SUFFIX[fmt]}"


def _safe_path(relative: str) -> Path:
    """The absolute path under EXPORT_ROOT, refusing any stored path that escapes it.

    Checked on the text first (NUL bytes, absolute paths, '..', over-long
    names), then on the real path with every symlink followed: a link inside
    the export folder that points outside it is refused too.
    """
    if not isinstance(relative, str) or not relative:
        raise ExportError(f"export path {relative!r} is empty")
    if "\x00" in relative:
        raise ExportError(f"export path {relative!r} contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise ExportError(f"export path {relative!r} is absolute; it must be relative to the export folder")
    if ".." in pure.parts:
        raise ExportError(f"export path {relative!r} climbs out with '..'")
    if len(relative.encode("utf-8")) > MAX_PATH_BYTES or any(
        len(part.encode("utf-8")) > MAX_NAME_BYTES for part in pure.parts
    ):
        raise ExportError(f"export path {relative[:60]!r}… is too long (a name over {MAX_NAME_BYTES} bytes, or "
                          f"the path over {MAX_PATH_BYTES})")
    root = Path(settings.EXPORT_ROOT).resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an unreadable folder
        raise ExportError(f"export path {relative!r} cannot be resolved: {exc}") from None
    if root not in path.parents:
        raise ExportError(f"export path {relative!r} is outside the export folder (through a symlink?)")
    return path


def export_file(*, export: TrainingSetExport) -> Path:
    """The finished file of an export, or ExportError saying why it cannot be served."""
    if export.status != TrainingSetExport.Status.DONE:
        raise ExportError(f"the {export.get_format_display()} export is {export.get_status_display().lower()}, "
                          f"not ready ({export.progress_percent}%)")
    path = _safe_path(export.path)
    if not path.exists():
        raise ExportError(f"the {export.get_format_display()} file is missing from the export folder")
    return path


def manifest_file(*, training_set: TrainingSet) -> Path:
    if training_set.status != TrainingSet.Status.PUBLISHED:
        raise ExportError("the manifest is written when every export is done; the set is still exporting")
    path = _safe_path(f"{training_set.export_path}/{MANIFEST_NAME}")
    if not path.exists():
        raise ExportError("the manifest file is missing from the export folder")
    return path


# Records ------------------------------------------------------------------


def real_prompt(passage: SourcePassage) -> str:
    title = " ".join(passage.title.split())
    return f"Tell me about {title}." if title else "Write an informative passage on this topic."


def training_set_order(*, training_set: TrainingSet) -> list[tuple[str, int]]:
    """Every record of the set as (origin, id), in the set's seeded order."""
    synthetic = sorted(TrainingSet.samples.through.objects.filter(trainingset_id=training_set.pk)
                       .values_list("sample_id", flat=True))
    real = sorted(training_set.passages.values_list("id", flat=True))
    order = [("synthetic", pk) for pk in synthetic] + [("real", pk) for pk in real]
    random.Random(f"{training_set.seed}/order").shuffle(order)
    return order


def training_set_records(*, training_set: TrainingSet, batch_size: int | None = None) -> Iterator[list[Record]]:
    """The set's records in order, a batch at a time (two queries per batch, whatever its size)."""
    batch_size = batch_size or BATCH_SIZE
    order = training_set_order(training_set=training_set)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        sample_ids = [pk for origin, pk in batch if origin == "synthetic"]
        passage_ids = [pk for origin, pk in batch if origin == "real"]
        samples = {
            row["id"]: row
            for row in Sample.objects.filter(id__in=sample_ids).values("id", "question", "answer", "generation__number")
        }
        passages = {p.pk: p for p in SourcePassage.objects.filter(id__in=passage_ids).only("id", "title", "text")}
        records = []
        for origin, pk in batch:
            if origin == "synthetic":
                row = samples[pk]
                records.append(Record("synthetic", row["generation__number"], pk, None, row["question"], row["answer"]))
            else:
                passage = passages[pk]
                records.append(Record("real", 0, None, pk, real_prompt(passage), passage.text))
        yield records


def chat_record(record: Record) -> dict:
    """The chat-messages shape used by OpenAI fine-tuning and TRL's SFT."""
    return {"messages": [{"role": "user", "content": record.prompt},
                         {"role": "assistant", "content": record.response}]}


def alpaca_record(record: Record) -> dict:
    """The Alpaca shape (Taori et al. 2023): instruction, input, output."""
    return {"instruction": record.prompt, "input": "", "output": record.response}


def _parquet_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("messages", pa.list_(message)),
        ("origin", pa.string()),
        ("source_generation", pa.int32()),
        ("sample_id", pa.int64()),
        ("passage_id", pa.int64()),
    ])


# Writing ------------------------------------------------------------------


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_records(*, fmt: str, batches: Iterator[list[Record]], path: Path,
                  progress: Callable[[int], None] | None = None) -> tuple[str, int, int]:
    """Write the records to `path` atomically (a temp file renamed into place).

    Returns (sha256, size in bytes, records). `progress(rows_so_far)` is called
    after each batch; an exception it raises abandons the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    rows = 0
    try:
        if fmt == TrainingSetExport.Format.PARQUET:
            import pyarrow as pa
            import pyarrow.parquet as pq

            os.close(fd)
            schema = _parquet_schema()
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_table(pa.Table.from_pylist([
                        {**chat_record(r), "origin": r.origin, "source_generation": r.source_generation,
                         "sample_id": r.sample_id, "passage_id": r.passage_id}
                        for r in batch
                    ], schema=schema))
                    rows += len(batch)
                    if progress:
                        progress(rows)
        else:
            shape = chat_record if fmt == TrainingSetExport.Format.CHAT else alpaca_record
            with os.fdopen(fd, "wb") as handle:
                for batch in batches:
                    handle.write("".join(json.dumps(shape(r), ensure_ascii=False) + "\n" for r in batch)
                                 .encode("utf-8"))
                    rows += len(batch)
                    if progress:
                        progress(rows)
                handle.flush()
                os.fsync(handle.fileno())
        sha256 = _sha256_of(tmp)
        size = tmp.stat().st_size
        tmp.chmod(0o444)  # a published file is never written again
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha256, size, rows


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).chmod(0o444)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# Running exports ----------------------------------------------------------


def exports_queue(*, export_ids: list[int]) -> None:
    """Queue the export tasks after the surrounding transaction commits."""
    from curation.tasks import export_training_set

    for export_id in export_ids:
        transaction.on_commit(lambda export_id=export_id: export_training_set.delay(export_id))


def _lease() -> timedelta:
    return timedelta(seconds=settings.OUROBOROS["EXPORT_LEASE_SECONDS"])


def _claim(export_id: int) -> uuid.UUID | None:
    """Take the export with a conditional update; None when it is done or someone else holds it."""
    return claim(TrainingSetExport, export_id, lease=_lease(), rows_written=0, error="")


class _ClaimLost(Exception):
    pass


def export_run(*, export_id: int) -> bool:
    """Write one export, then publish its set if it was the last. Running it twice is harmless.

    1. Claim the export (queued, or running with an expired claim); else do nothing.
    2. Stream the set's records into a temp file, recording progress and
       extending the claim after each batch.
    3. Rename the file into place (read-only), store its sha256 and size, mark it done.
    4. Publish the set when every export is done.
    Returns True when this call wrote the file.
    """
    token = _claim(export_id)
    if token is None:
        return False
    export = TrainingSetExport.objects.select_related("training_set").get(pk=export_id)
    try:
        path = _safe_path(export.path)
    except ExportError as exc:
        # A stored path that would write outside the export folder: permanent, no retry.
        export_fail(export_id=export_id, reason=str(exc))
        log.error("export %s refused: %s", export_id, exc)
        return False

    def progress(rows: int) -> None:
        held = TrainingSetExport.objects.filter(pk=export_id, claim_token=token).update(
            rows_written=rows, claimed_until=timezone.now() + _lease()
        )
        if not held:
            raise _ClaimLost()

    try:
        sha256, size, rows = write_records(
            fmt=export.format, batches=training_set_records(training_set=export.training_set),
            path=path, progress=progress,
        )
    except _ClaimLost:
        log.info("export %s: claim lost to another worker; leaving it to them", export_id)
        return False
    except Exception as exc:
        # Hand the export back at once, so that the task's retry can claim it again.
        TrainingSetExport.objects.filter(pk=export_id, claim_token=token).update(
            status=TrainingSetExport.Status.QUEUED, claim_token=None, claimed_until=None,
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise
    finished = TrainingSetExport.objects.filter(pk=export_id, claim_token=token).update(
        status=TrainingSetExport.Status.DONE, sha256=sha256, size_bytes=size, rows_written=rows,
        rows_total=rows, finished_at=timezone.now(), claim_token=None, claimed_until=None,
    )
    if finished:
        training_set_publish_if_ready(training_set_id=export.training_set_id)
    return bool(finished)


def export_fail(*, export_id: int, reason: str) -> None:
    """Record an export's final failure (retries exhausted) so that the UI shows it."""
    TrainingSetExport.objects.filter(pk=export_id).exclude(status=TrainingSetExport.Status.DONE).update(
        status=TrainingSetExport.Status.FAILED, error=reason[:2000], claim_token=None, claimed_until=None,
        finished_at=timezone.now(),
    )


def export_retry(*, export: TrainingSetExport) -> bool:
    """Queue a failed export again (its retries were exhausted); False when it had not failed.

    The conditional update makes two retries at once queue it once.
    """
    with transaction.atomic():
        changed = TrainingSetExport.objects.filter(pk=export.pk, status=TrainingSetExport.Status.FAILED).update(
            status=TrainingSetExport.Status.QUEUED, error="", rows_written=0, finished_at=None,
            claim_token=None, claimed_until=None,
        )
        if changed:
            exports_queue(export_ids=[export.pk])
    return bool(changed)


def exports_release_dead() -> list[int]:
    """Queue again, at once, every export whose claim a dead process on this host holds (a worker starting)."""
    ids = claims_release_dead(TrainingSetExport)
    with transaction.atomic():
        exports_queue(export_ids=ids)
    return ids


def exports_requeue_stale(*, idle_seconds: int = 300) -> list[int]:
    """Queue again every unfinished export nobody works on: an expired claim, or queued and untouched."""
    ids = stale_ids(TrainingSetExport, idle_seconds=idle_seconds)
    with transaction.atomic():
        exports_queue(export_ids=ids)
    return ids


def training_set_publish_if_ready(*, training_set_id: int) -> bool:
    """Publish the set once every export is done: write manifest.json and freeze the set.

    The manifest adds each file's format, path, sha256, size and record count to
    the composition recorded at build time; the set keeps the manifest's own sha256.
    """
    with transaction.atomic():
        training_set = TrainingSet.objects.select_for_update().get(pk=training_set_id)
        if training_set.status == TrainingSet.Status.PUBLISHED:
            return False
        exports = list(training_set.exports.order_by("format"))
        if not exports or any(e.status != TrainingSetExport.Status.DONE for e in exports):
            return False
        published_at = timezone.now()
        manifest = {
            **training_set.manifest,
            "files": [
                {"format": FORMAT_NAME[e.format], "path": Path(e.path).name, "sha256": e.sha256,
                 "bytes": e.size_bytes, "records": e.rows_written}
                for e in exports
            ],
            "published_at": published_at.isoformat(),
        }
        data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        _write_bytes_atomically(_safe_path(f"{training_set.export_path}/{MANIFEST_NAME}"), data)
        TrainingSet.objects.filter(pk=training_set.pk, status=TrainingSet.Status.EXPORTING).update(
            status=TrainingSet.Status.PUBLISHED, manifest=manifest, sha256=hashlib.sha256(data).hexdigest(),
            published_at=published_at,
        )
        # Other apps act on a published set (generation: train the next student, call a trainer's webhook).
        transaction.on_commit(lambda: _announce_published(training_set_id), robust=True)
    return True


def _announce_published(training_set_id: int) -> None:
    from curation.extensions import training_set_published

    training_set = TrainingSet.objects.select_related("lineage", "generation").get(pk=training_set_id)
    training_set_published.send(sender=TrainingSet, training_set=training_set)


def training_set_verify(*, training_set: TrainingSet, rebuild: bool = False) -> list[str]:
    """Check a published set against its manifest; returns the problems found (empty: all good).

    Every file must exist with the sha256 the manifest lists, and manifest.json
    with the sha256 the set stores. With `rebuild`, every format is also written
    again from the database with the set's seed into a scratch folder and must
    come out byte-identical: the build is reproducible.
    """
    problems = []
    if training_set.status != TrainingSet.Status.PUBLISHED:
        return [f"training set {training_set.pk} is not published yet"]
    try:
        manifest_path = manifest_file(training_set=training_set)
    except ExportError as exc:
        problems.append(str(exc))
    else:
        if _sha256_of(manifest_path) != training_set.sha256:
            problems.append(f"{MANIFEST_NAME} does not match the sha256 recorded for the set")
    listed = {entry["format"]: entry["sha256"] for entry in training_set.manifest.get("files", [])}
    for export in training_set.exports.all():
        name = FORMAT_NAME[export.format]
        try:
            path = export_file(export=export)
        except ExportError as exc:
            problems.append(str(exc))
            continue
        actual = _sha256_of(path)
        if actual != listed.get(name):
            problems.append(f"{path.name}: sha256 {actual[:12]}… differs from the manifest's "
                            f"{(listed.get(name) or 'none')[:12]}…")
        if rebuild:
            with tempfile.TemporaryDirectory() as scratch:
                again, _, _ = write_records(fmt=export.format, path=Path(scratch) / path.name,
                                            batches=training_set_records(training_set=training_set))
            if again != listed.get(name):
                problems.append(f"{path.name}: rebuilding from seed {training_set.seed} gives a different file")
    return problems
