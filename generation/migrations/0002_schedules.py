"""Write the periodic jobs declared in ouroboros/schedules.py as beat rows."""
from django.db import migrations


def forwards(apps, schema_editor):
    from ouroboros.schedules import sync_schedules

    sync_schedules(apps.get_model("django_celery_beat", "CrontabSchedule"),
                   apps.get_model("django_celery_beat", "PeriodicTask"))


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
