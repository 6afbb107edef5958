"""The next generation: lineage policies, published training sets with exports,
per-generation metrics and gate pauses.

Besides the generated schema it
1. marks training sets built before this migration as published and records
   their one JSONL file as a finished chat export, so their downloads keep working;
2. gives every existing lineage the default policy;
3. installs the triggers that make a published training set immutable;
4. writes the new periodic jobs of ouroboros/schedules.py as beat rows.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

IMMUTABLE_SQL = """
CREATE FUNCTION curation_trainingset_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'published' THEN
        RAISE EXCEPTION 'training set % is published and cannot be changed', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER curation_trainingset_immutable BEFORE UPDATE OR DELETE ON curation_trainingset
    FOR EACH ROW EXECUTE FUNCTION curation_trainingset_immutable();

-- Membership and export rows of a published set are frozen with it.
CREATE FUNCTION curation_trainingset_member_immutable() RETURNS trigger AS $$
DECLARE
    set_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN set_id := NEW.trainingset_id; ELSE set_id := OLD.trainingset_id; END IF;
    IF EXISTS (SELECT 1 FROM curation_trainingset WHERE id = set_id AND status = 'published') THEN
        RAISE EXCEPTION 'training set % is published: its records cannot change', set_id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER curation_trainingset_samples_immutable BEFORE INSERT OR UPDATE OR DELETE
    ON curation_trainingset_samples FOR EACH ROW EXECUTE FUNCTION curation_trainingset_member_immutable();
CREATE TRIGGER curation_trainingset_passages_immutable BEFORE INSERT OR UPDATE OR DELETE
    ON curation_trainingset_passages FOR EACH ROW EXECUTE FUNCTION curation_trainingset_member_immutable();

CREATE FUNCTION curation_trainingsetexport_immutable() RETURNS trigger AS $$
DECLARE
    set_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN set_id := NEW.training_set_id; ELSE set_id := OLD.training_set_id; END IF;
    IF EXISTS (SELECT 1 FROM curation_trainingset WHERE id = set_id AND status = 'published') THEN
        RAISE EXCEPTION 'training set % is published: its exports cannot change', set_id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER curation_trainingsetexport_immutable BEFORE INSERT OR UPDATE OR DELETE
    ON curation_trainingsetexport FOR EACH ROW EXECUTE FUNCTION curation_trainingsetexport_immutable();
"""

DROP_IMMUTABLE_SQL = """
DROP TRIGGER IF EXISTS curation_trainingsetexport_immutable ON curation_trainingsetexport;
DROP TRIGGER IF EXISTS curation_trainingset_passages_immutable ON curation_trainingset_passages;
DROP TRIGGER IF EXISTS curation_trainingset_samples_immutable ON curation_trainingset_samples;
DROP TRIGGER IF EXISTS curation_trainingset_immutable ON curation_trainingset;
DROP FUNCTION IF EXISTS curation_trainingsetexport_immutable();
DROP FUNCTION IF EXISTS curation_trainingset_member_immutable();
DROP FUNCTION IF EXISTS curation_trainingset_immutable();
"""


def legacy_sets_and_policies(apps, schema_editor):
    TrainingSet = apps.get_model("curation", "TrainingSet")
    TrainingSetExport = apps.get_model("curation", "TrainingSetExport")
    Lineage = apps.get_model("curation", "Lineage")
    LineagePolicy = apps.get_model("curation", "LineagePolicy")
    for training_set in TrainingSet.objects.all():
        # The old builder wrote one chat-messages file; its folder becomes the set's folder.
        TrainingSetExport.objects.create(
            training_set=training_set, format="chat", status="done", path=training_set.export_path,
            rows_total=training_set.sample_count, rows_written=training_set.sample_count,
            sha256=training_set.sha256,
        )
        folder = training_set.export_path.rsplit("/", 1)[0] if "/" in training_set.export_path else ""
        TrainingSet.objects.filter(pk=training_set.pk).update(
            export_path=folder, published_at=training_set.created_at,
        )
    for lineage in Lineage.objects.filter(policy__isnull=True):
        LineagePolicy.objects.create(lineage=lineage)


def sync_periodic_jobs(apps, schema_editor):
    from ouroboros.schedules import sync_schedules

    sync_schedules(apps.get_model("django_celery_beat", "CrontabSchedule"),
                   apps.get_model("django_celery_beat", "PeriodicTask"))


class Migration(migrations.Migration):

    dependencies = [
        ('curation', '0003_lineage_backend_settings'),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='trainingset',
            name='passages',
            field=models.ManyToManyField(blank=True, related_name='training_sets', to='curation.sourcepassage'),
        ),
        migrations.AddField(
            model_name='trainingset',
            name='policy',
            field=models.JSONField(blank=True, default=dict, help_text="The lineage's policy when the set was built."),
        ),
        migrations.AddField(
            model_name='trainingset',
            name='published_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='trainingset',
            name='real_count',
            field=models.PositiveIntegerField(default=0, help_text='Real records: source passages.'),
        ),
        migrations.AddField(
            model_name='trainingset',
            name='seed',
            field=models.BigIntegerField(default=0, help_text='Seeds the real-data draw and the record order.'),
        ),
        migrations.AddField(
            model_name='trainingset',
            name='status',
            field=models.CharField(choices=[('exporting', 'Exporting'), ('published', 'Published')], default='published', max_length=10),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name='trainingset',
            name='status',
            field=models.CharField(choices=[('exporting', 'Exporting'), ('published', 'Published')], default='exporting', max_length=10),
        ),
        migrations.AlterField(
            model_name='trainingset',
            name='export_path',
            field=models.CharField(help_text="The set's folder, relative to EXPORT_ROOT.", max_length=500),
        ),
        migrations.AlterField(
            model_name='trainingset',
            name='sample_count',
            field=models.PositiveIntegerField(help_text='Synthetic records: accepted samples.'),
        ),
        migrations.AlterField(
            model_name='trainingset',
            name='sha256',
            field=models.CharField(blank=True, help_text='sha256 of manifest.json, once published.', max_length=64),
        ),
        migrations.CreateModel(
            name='GatePause',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reasons', models.JSONField(default=list)),
                ('schedule_ids', models.JSONField(default=list, help_text='The schedules this gate paused.')),
                ('paused_at', models.DateTimeField(auto_now_add=True)),
                ('resumed_at', models.DateTimeField(blank=True, null=True)),
                ('note', models.CharField(blank=True, max_length=500)),
                ('generation', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='gate_pause', to='curation.generation')),
                ('lineage', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='gate_pauses', to='curation.lineage')),
                ('resumed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-paused_at'],
            },
        ),
        migrations.CreateModel(
            name='GenerationMetrics',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('fingerprint', models.CharField(help_text='What the metrics were computed from; stale when it changes.', max_length=64)),
                ('computed_at', models.DateTimeField()),
                ('generated', models.PositiveIntegerField(default=0, help_text='Samples generated (generation 0: real passages).')),
                ('accepted', models.PositiveIntegerField(default=0)),
                ('rejected', models.PositiveIntegerField(default=0)),
                ('pending', models.PositiveIntegerField(default=0)),
                ('accept_rate', models.FloatField(blank=True, null=True)),
                ('flag_rates', models.JSONField(blank=True, default=dict)),
                ('duplicate_rate', models.FloatField(blank=True, null=True)),
                ('hallucination_rate', models.FloatField(blank=True, null=True)),
                ('reject_reasons', models.JSONField(blank=True, default=dict)),
                ('distinct_1', models.FloatField(blank=True, null=True)),
                ('distinct_2', models.FloatField(blank=True, null=True)),
                ('pairwise_distance', models.FloatField(blank=True, null=True)),
                ('vendi', models.FloatField(blank=True, null=True)),
                ('coverage', models.FloatField(blank=True, null=True)),
                ('centroid_drift', models.FloatField(blank=True, null=True)),
                ('selection_bias', models.FloatField(blank=True, null=True)),
                ('agreement', models.JSONField(blank=True, default=dict, help_text='Decision pairs of two reviewers on one sample: a 2×2 table.')),
                ('kappa', models.FloatField(blank=True, null=True)),
                ('params', models.JSONField(blank=True, default=dict)),
                ('at_risk', models.BooleanField(default=False)),
                ('risk_reasons', models.JSONField(blank=True, default=list)),
                ('generation', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='metrics', to='curation.generation')),
            ],
            options={
                'verbose_name_plural': 'generation metrics',
                'ordering': ['generation'],
            },
        ),
        migrations.CreateModel(
            name='LineagePolicy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('mode', models.CharField(choices=[('accumulate', "Accumulate: every earlier accepted sample, plus this generation's"), ('replace', "Replace: only this generation's accepted samples")], default='accumulate', max_length=12)),
                ('min_real_fraction', models.FloatField(default=0.2, help_text='The least share of a training set that must be real passages (0 to below 1).')),
                ('metrics_seed', models.BigIntegerField(default=0, help_text='Seed for the sampled metrics.')),
                ('metrics_sample_size', models.PositiveIntegerField(default=1000, help_text='Above this many samples, pairwise distance and Vendi use a seeded sample.')),
                ('coverage_radius', models.FloatField(default=0.5, help_text='A real passage is covered when an accepted sample is within this cosine distance.')),
                ('gate_min_samples', models.PositiveIntegerField(default=10, help_text='Gates judge a generation only once it has this many samples (accepted, or generated).')),
                ('gate_min_diversity_ratio', models.FloatField(blank=True, default=0.8, help_text="At risk when accepted samples' mean pairwise cosine distance falls below this share of generation 0's.", null=True)),
                ('gate_max_duplicate_rate', models.FloatField(blank=True, default=0.5, help_text='At risk when more of the generated samples than this are near-duplicates.', null=True)),
                ('gate_min_coverage', models.FloatField(blank=True, help_text='At risk when fewer real passages than this share are covered.', null=True)),
                ('gate_max_hallucination_rate', models.FloatField(blank=True, help_text='At risk when more of the generated samples than this are flagged as hallucinations.', null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('lineage', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='policy', to='curation.lineage')),
            ],
            options={
                'verbose_name_plural': 'lineage policies',
                'constraints': [models.CheckConstraint(condition=models.Q(('min_real_fraction__gte', 0), ('min_real_fraction__lt', 1)), name='policy_real_fraction_range'), models.CheckConstraint(condition=models.Q(('coverage_radius__gte', 0), ('coverage_radius__lte', 2)), name='policy_coverage_radius_range')],
            },
        ),
        migrations.CreateModel(
            name='TrainingSetExport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('format', models.CharField(choices=[('chat', 'Chat messages JSONL'), ('alpaca', 'Alpaca JSONL'), ('parquet', 'Parquet')], max_length=10)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='queued', max_length=10)),
                ('path', models.CharField(help_text='Relative to EXPORT_ROOT.', max_length=500)),
                ('rows_total', models.PositiveIntegerField(default=0)),
                ('rows_written', models.PositiveIntegerField(default=0)),
                ('sha256', models.CharField(blank=True, max_length=64)),
                ('size_bytes', models.BigIntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('claim_token', models.UUIDField(blank=True, null=True)),
                ('claimed_until', models.DateTimeField(blank=True, null=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('training_set', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='exports', to='curation.trainingset')),
            ],
            options={
                'ordering': ['training_set', 'format'],
                'constraints': [models.UniqueConstraint(fields=('training_set', 'format'), name='export_one_per_format')],
            },
        ),
        migrations.RunPython(legacy_sets_and_policies, migrations.RunPython.noop),
        migrations.RunSQL(IMMUTABLE_SQL, DROP_IMMUTABLE_SQL),
        migrations.RunPython(sync_periodic_jobs, migrations.RunPython.noop),
    ]
