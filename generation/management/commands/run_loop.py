"""Run the loop unattended: generate → flag → review → build → train → the next generation.

    python manage.py run_loop biology-tutor-qa --generations 3 --items 20
    python manage.py run_loop biology-tutor-qa --generations 3 --items 20 --auto-review
    python manage.py run_loop biology-tutor-qa --generations 3 --items 20 --auto-review --review-mode accept-all

Workers do the work (`make run` starts them: `generation`, `curation`, and
`training` for loop mode train); this command drives the steps and waits.
With auto review off it waits for reviewers, and says so every minute.
"""
from __future__ import annotations

import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from curation.models import Lineage
from curation.services.auto_review import BY_FLAGS, MODES
from curation.services.lineages import lineage_settings_update
from generation.services.loop_runner import LoopError, loop_run


class Command(BaseCommand):
    help = "Run G generations of the loop on a lineage: generate, flag, review, build, train."

    def add_arguments(self, parser):
        parser.add_argument("lineage", help="the lineage's slug")
        parser.add_argument("--generations", type=int, required=True, help="rounds to run")
        parser.add_argument("--items", type=int, required=True, help="samples to generate per generation")
        parser.add_argument("--seed", type=int, default=None, help="base seed of the jobs (random when left out)")
        parser.add_argument("--auto-review", action="store_true",
                            help="turn the lineage's auto review on first (a system reviewer decides by the flags)")
        parser.add_argument("--review-mode", choices=MODES, default=BY_FLAGS,
                            help="auto review's decisions: by the flags (default), or accept-all (no curation: "
                                 "the recursion bench's uncurated arm)")
        parser.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the database")
        parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds any one step may take")
        parser.add_argument("--json", action="store_true", help="end with one JSON line of the per-generation report")

    def handle(self, *args, lineage, generations, items, seed, auto_review, review_mode, poll, timeout, json: bool,
               **options):
        target = Lineage.objects.filter(slug=lineage).first()
        if target is None:
            known = ", ".join(Lineage.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no lineage with slug {lineage!r} (known: {known})")
        if auto_review and not target.auto_review:
            target = lineage_settings_update(lineage=target, settings={"auto_review": True})
        try:
            reports = loop_run(lineage=target, generations=generations, items=items, seed=seed, poll=poll,
                               timeout=timeout, say=lambda line: self.stdout.write(line), review_mode=review_mode)
        except LoopError as exc:
            raise CommandError(str(exc)) from None
        if json:
            self.stdout.write(_json_line(reports))


def _json_line(reports) -> str:
    return jsonlib.dumps({"lineage_loop": [report.__dict__ for report in reports]})
