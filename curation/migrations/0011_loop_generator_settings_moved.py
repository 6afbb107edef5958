from django.db import migrations

MOVED_FIELDS = ("backend", "backend_model", "backend_base_url", "backend_api_key_env", "critique",
                "student_answers", "temperature")


class Migration(migrations.Migration):
    """The generator settings live in generation.GeneratorSettings now; generation's 0004 copied them there."""

    dependencies = [
        ("curation", "0010_skeleton_sample_parent"),
        ("generation", "0004_skeleton_loop_models"),
    ]

    operations = [migrations.RemoveField(model_name="lineage", name=name) for name in MOVED_FIELDS]
