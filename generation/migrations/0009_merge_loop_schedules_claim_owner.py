from django.db import migrations


class Migration(migrations.Migration):
    """Joins the loop schedules (0008_loop_schedules) and the training runs' claim owner (0008_trainingrun_claim_owner)."""

    dependencies = [
        ("generation", "0008_loop_schedules"),
        ("generation", "0008_trainingrun_claim_owner"),
    ]

    operations = []
