"""Re-flag every sample of a lineage as a job on the `curation` queue.

    python manage.py reflag_lineage SLUG [--chunk-size 50] [--wait]

Use it after a detector change (the flags store DETECTOR versions) or a new
threshold. `--wait` polls the run's progress until it ends.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from curation.models import FlagRun, Lineage
from curation.services.reflag import ReflagError, flag_run_create


class Command(BaseCommand):
    help = "Queue a chunked re-flag of a lineage and optionally wait for it."

    def add_arguments(self, parser):
        parser.add_argument("lineage", help="the lineage's slug")
        parser.add_argument("--chunk-size", type=int, default=None)
        parser.add_argument("--wait", action="store_true", help="print progress until the run ends")

    def handle(self, *args, lineage: str, chunk_size: int | None, wait: bool, **options):
        try:
            target = Lineage.objects.get(slug=lineage)
        except Lineage.DoesNotExist:
            raise CommandError(f"no lineage with slug {lineage!r}") from None
        if chunk_size is not None and chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1")
        try:
            run = flag_run_create(lineage=target, chunk_size=chunk_size)
        except ReflagError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"re-flag run {run.pk} queued: {run.total} samples in chunks of {run.chunk_size}")
        while wait:
            run.refresh_from_db()
            self.stdout.write(f"  {run.done}/{run.total} ({run.progress_percent}%) {run.status}")
            if run.status in (FlagRun.Status.DONE, FlagRun.Status.FAILED):
                if run.status == FlagRun.Status.FAILED:
                    raise CommandError(f"re-flag run {run.pk} failed: {run.last_error}")
                break
            time.sleep(2)
