"""Start a generation job from the shell, optionally waiting for it to end.

    python manage.py start_job biology-tutor-qa --count 20 --wait
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from curation.models import Lineage
from generation.errors import JobError
from generation.models import GenerationJob
from generation.services import job_create


class Command(BaseCommand):
    help = "Queue a generation job for a lineage (a worker on the `generation` queue runs it)."

    def add_arguments(self, parser):
        parser.add_argument("lineage", help="the lineage's slug")
        parser.add_argument("--count", type=int, default=10, help="samples to generate (default 10)")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--wait", action="store_true", help="print progress until the job ends")

    def handle(self, *args, lineage, count, seed, wait, **options):
        try:
            target = Lineage.objects.get(slug=lineage)
        except Lineage.DoesNotExist:
            known = ", ".join(Lineage.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no lineage with slug {lineage!r} (known: {known})") from None
        try:
            job = job_create(lineage=target, requested=count, seed=seed)
        except JobError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"job {job.pk} queued: {count} samples for {target.name}")
        while wait:
            time.sleep(2)
            job.refresh_from_db()
            self.stdout.write(f"  {job.done_count}/{job.requested} done, {job.failed_count} failed, {job.status}")
            if not job.is_active:
                if job.status != GenerationJob.Status.DONE:
                    raise CommandError(f"job {job.pk} ended {job.status}: {job.last_error}")
                break
