from django.core.management.base import BaseCommand
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from ouroboros.schedules import sync_schedules


class Command(BaseCommand):
    help = "Write the periodic jobs declared in ouroboros/schedules.py as django-celery-beat rows."

    def handle(self, *args, **options):
        count = sync_schedules(CrontabSchedule, PeriodicTask)
        self.stdout.write(f"{count} schedules in place.")
