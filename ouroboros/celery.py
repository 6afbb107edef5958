"""The Celery application. Workers run `celery -A ouroboros worker -Q generation,curation`."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

app = Celery("ouroboros")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
