from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0007_merge_20261126_1217"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="sample",
            index=models.Index(fields=["lineage", "status", "id"], name="sample_lineage_status_idx"),
        ),
        migrations.AddIndex(
            model_name="sample",
            index=models.Index(fields=["lineage", "-risk", "id"], name="sample_lineage_risk_idx"),
        ),
    ]
