"""Every periodic job, declared once. A migration (generation/0002) writes them
as django-celery-beat rows, where they can be edited in the admin;
`python manage.py sync_schedules` re-applies this list after it changes."""
from __future__ import annotations

SCHEDULES = [
    {
        "name": "Re-queue generation chunks whose worker died",
        "task": "generation.requeue_stale_jobs",
        "crontab": {"minute": "*/2"},
        "expire_seconds": 110,
    },
    {
        "name": "Flag samples whose flagging was lost",
        "task": "curation.flag_missing_samples",
        "crontab": {"minute": "*/5"},
        "expire_seconds": 290,
    },
    {
        "name": "Recompute the metrics of generations whose samples changed",
        "task": "curation.refresh_stale_metrics",
        "crontab": {"minute": "*/10"},
        "expire_seconds": 590,
    },
    {
        "name": "Re-queue training-set exports whose worker died",
        "task": "curation.requeue_stale_exports",
        "crontab": {"minute": "*/5"},
        "expire_seconds": 290,
    },
    {
        "name": "Re-queue training runs whose worker died",
        "task": "generation.requeue_stale_training_runs",
        "crontab": {"minute": "*/2"},
        "expire_seconds": 110,
    },
    {
        "name": "Re-queue passage imports whose worker died",
        "task": "curation.requeue_stale_imports",
        "crontab": {"minute": "*/5"},
        "expire_seconds": 290,
    },
    {
        "name": "Re-queue re-flag runs whose message or worker was lost",
        "task": "curation.requeue_stale_reflags",
        "crontab": {"minute": "*/5"},
        "expire_seconds": 290,
    },
]


def sync_schedules(CrontabSchedule, PeriodicTask) -> int:
    """Create or update the beat rows for SCHEDULES; takes the models so a migration can pass its own."""
    for spec in SCHEDULES:
        fields = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
        fields.update(spec["crontab"])
        schedule, _ = CrontabSchedule.objects.get_or_create(**fields, timezone="UTC")
        PeriodicTask.objects.update_or_create(
            name=spec["name"],
            defaults={"task": spec["task"], "crontab": schedule, "expire_seconds": spec["expire_seconds"],
                      "enabled": True},
        )
    return len(SCHEDULES)
