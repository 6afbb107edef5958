"""Building the next generation: freeze accepted samples into a training set."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from curation.models import Generation, Lineage, Sample, TrainingSet


class TrainingSetError(Exception):
    """A training set that cannot be built; the message says which rule failed."""


def chat_record(sample: Sample) -> dict:
    """One line of the export: the chat-messages shape used by OpenAI fine-tuning and TRL's SFT."""
    return {
        "messages": [
            {"role": "user", "content": sample.question},
            {"role": "assistant", "content": sample.answer},
        ]
    }


def _write_jsonl(path: Path, records) -> str:
    """Write records atomically (a temp file renamed into place) and return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            for record in records:
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def training_set_build(*, lineage: Lineage, built_by) -> TrainingSet:
    """Freeze the open generation's accepted samples and open the next generation.

    1. Lock the lineage's open generation, so two curators cannot build it twice.
    2. Refuse while a job of that generation is still running, or when nothing was accepted.
    3. Write the JSONL export (atomically) and its sha256.
    4. Record the set with its manifest, close the generation, open generation N+1.
    Samples still pending review are left out and counted in the manifest.
    """
    from generation.models import GenerationJob

    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .filter(lineage=lineage, status=Generation.Status.OPEN)
            .first()
        )
        if generation is None:
            raise TrainingSetError(f"lineage {lineage.name!r} has no open generation to build from")
        running = GenerationJob.objects.filter(generation=generation, status__in=GenerationJob.ACTIVE).count()
        if running:
            raise TrainingSetError(
                f"generation {generation.number} still has {running} running job(s); wait or cancel them first"
            )
        accepted = list(
            Sample.objects.filter(generation=generation, status=Sample.Status.ACCEPTED).order_by("id")
        )
        if not accepted:
            raise TrainingSetError(f"generation {generation.number} has no accepted samples yet")
        pending = Sample.objects.filter(generation=generation, status=Sample.Status.PENDING).count()
        rejected = Sample.objects.filter(generation=generation, status=Sample.Status.REJECTED).count()

        relative = Path(lineage.slug) / f"generation-{generation.number:03d}.jsonl"
        path = Path(settings.EXPORT_ROOT) / relative
        sha256 = _write_jsonl(path, (chat_record(s) for s in accepted))
        try:
            manifest = {
                "lineage": lineage.slug,
                "generation": generation.number,
                "format": "chat-messages-jsonl",
                "file": str(relative),
                "sha256": sha256,
                "counts": {"accepted": len(accepted), "rejected": rejected, "left_out_pending": pending},
                "sample_ids": [s.pk for s in accepted],
                "built_at": timezone.now().isoformat(),
            }
            training_set = TrainingSet.objects.create(
                lineage=lineage,
                generation=generation,
                sample_count=len(accepted),
                export_path=str(relative),
                sha256=sha256,
                manifest=manifest,
                built_by=built_by,
            )
            training_set.samples.set(accepted)
            Generation.objects.filter(pk=generation.pk).update(
                status=Generation.Status.CLOSED, closed_at=timezone.now()
            )
            Generation.objects.create(lineage=lineage, number=generation.number + 1)
        except BaseException:
            path.unlink(missing_ok=True)  # no export without its database record
            raise
    return training_set


def training_set_path(training_set: TrainingSet) -> Path:
    """The export's absolute path, refusing any stored path that escapes the export folder."""
    root = Path(settings.EXPORT_ROOT).resolve()
    path = (root / training_set.export_path).resolve()
    if root not in path.parents:
        raise TrainingSetError(f"export path {training_set.export_path!r} is outside the export folder")
    return path
