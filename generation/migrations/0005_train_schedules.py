"""Write the beat row of the training-run sweep (ouroboros/schedules.py) beside the others."""
from django.db import migrations


def forwards(apps, schema_editor):
    from ouroboros.schedules import sync_schedules

    sync_schedules(apps.get_model("django_celery_beat", "CrontabSchedule"),
                   apps.get_model("django_celery_beat", "PeriodicTask"))


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0004_skeleton_loop_models"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
