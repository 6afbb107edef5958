"""Check a published training set against its manifest (and, with --rebuild, rebuild it from its seed).

    python manage.py verify_training_set 12 --rebuild
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from curation.models import TrainingSet
from curation.services.exports import training_set_verify


class Command(BaseCommand):
    help = "Verify the sha256 of every file of a training set; --rebuild also proves the build reproducible."

    def add_arguments(self, parser):
        parser.add_argument("training_set", type=int, help="the training set's id")
        parser.add_argument("--rebuild", action="store_true", help="write every format again and compare")

    def handle(self, *args, training_set: int, rebuild: bool, **options):
        found = TrainingSet.objects.filter(pk=training_set).first()
        if found is None:
            raise CommandError(f"no training set {training_set}")
        problems = training_set_verify(training_set=found, rebuild=rebuild)
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write(f"training set {found.pk} ({found.generation}): every file matches its manifest"
                          + (" and rebuilds byte-identical" if rebuild else ""))
