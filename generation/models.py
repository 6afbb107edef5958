"""Generation jobs: one run of the tutor/student generator for a generation,
processed in chunks by Celery tasks on the `generation` queue."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from curation.services.claims import ClaimedWork
from ouroboros.egress import validate_key_env, validate_url


class GenerationJob(ClaimedWork):
    """One run of the generator; its claim fields (who runs its current chunk) are ClaimedWork's."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    lineage = models.ForeignKey("curation.Lineage", on_delete=models.CASCADE, related_name="jobs")
    generation = models.ForeignKey("curation.Generation", on_delete=models.CASCADE, related_name="jobs")
    requested = models.PositiveIntegerField(help_text="How many samples the job must end with.")
    chunk_size = models.PositiveIntegerField(default=4)
    seed = models.BigIntegerField(default=0, help_text="Base seed; item i uses seed + i.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    done_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.done_count}/{self.requested}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def processed(self) -> int:
        return self.done_count + self.failed_count

    @property
    def rate_per_minute(self) -> float | None:
        """Items per minute since the job started; None before there is anything to measure."""
        if not self.started_at or not self.processed:
            return None
        end = self.finished_at or timezone.now()
        minutes = max((end - self.started_at).total_seconds() / 60, 1 / 60)
        return self.processed / minutes

    @property
    def eta_seconds(self) -> int | None:
        rate = self.rate_per_minute
        if not self.is_active or not rate:
            return None
        return round(max(self.requested - self.processed, 0) / rate * 60)

    @property
    def progress_percent(self) -> int:
        if not self.requested:
            return 100
        return min(100, round(100 * (self.done_count + self.failed_count) / self.requested))


class GenerationFailure(models.Model):
    """An item the generator could not produce: recorded with its reason, never stored as a sample."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="failures")
    item_index = models.PositiveIntegerField()
    reason = models.CharField(max_length=500)
    raw_output = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "item_index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "item_index"], name="failure_unique_job_item"),
        ]

    def __str__(self) -> str:
        return f"Job {self.job_id} item {self.item_index}: {self.reason}"


class PromptTemplate(models.Model):
    """A versioned set of prompts for one lineage. Rows are never edited: saving
    a change in the admin writes the next version, so every sample's
    `prompt_version` names exactly the words that produced it."""

    PLACEHOLDERS = {"tutor_system": {"style"}, "student_system": set(), "critique_system": set()}

    lineage = models.ForeignKey("curation.Lineage", on_delete=models.CASCADE, related_name="prompt_templates")
    version = models.PositiveIntegerField()
    tutor_system = models.TextField(help_text="System prompt of the tutor; {style} is the question style.")
    student_system = models.TextField()
    critique_system = models.TextField(blank=True, help_text="Used when the lineage has the critique turn on.")
    question_styles = models.JSONField(
        default=list, blank=True, help_text="A list of question styles; one is drawn per item for variety."
    )
    note = models.CharField(max_length=200, blank=True, help_text="What changed in this version.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["lineage", "version"], name="prompt_template_unique_version"),
        ]

    def __str__(self) -> str:
        return f"{self.lineage} prompts v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.lineage.slug}/v{self.version}"


class LineageSchedule(models.Model):
    """A recurring generation job for a lineage (crontab, UTC). Each row is
    mirrored into one django-celery-beat PeriodicTask by
    `generation.services.schedule_sync`; beat runs `generation.run_schedule`."""

    lineage = models.ForeignKey("curation.Lineage", on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200)
    minute = models.CharField(max_length=64, default="0")
    hour = models.CharField(max_length=64, default="2")
    day_of_week = models.CharField(max_length=64, default="*")
    day_of_month = models.CharField(max_length=64, default="*")
    month_of_year = models.CharField(max_length=64, default="*")
    requested = models.PositiveIntegerField(default=50, help_text="Samples per run.")
    max_backlog = models.PositiveIntegerField(
        default=200, help_text="Skip a run while this many samples (or more) wait for review."
    )
    enabled = models.BooleanField(default=True)
    runs_loop = models.BooleanField(
        default=False, verbose_name="runs the loop",
        help_text="Each firing advances the lineage's loop one step (generate, flag and review, build, train, "
                  "next generation) instead of starting a job; `requested` is the samples per generation.",
    )
    loop_last_generation = models.PositiveIntegerField(
        default=0, help_text="The loop stops once this generation's set is built and the next student is ready "
                             "(0: no end).",
    )
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.CharField(max_length=500, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True, editable=False)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, editable=False,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "name"]

    def __str__(self) -> str:
        return f"{self.lineage}: {self.name}"

    @property
    def crontab_display(self) -> str:
        return f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"


class ScheduleRun(models.Model):
    """What one firing of a schedule did: started a job, or skipped and why."""

    schedule = models.ForeignKey(LineageSchedule, on_delete=models.CASCADE, related_name="runs")
    job = models.ForeignKey(GenerationJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    skipped_reason = models.CharField(max_length=500, blank=True)
    loop_step = models.CharField(max_length=500, blank=True, help_text="A loop schedule's step: done or awaited.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.created_at:%Y-%m-%d %H:%M}: " + (
            f"job {self.job_id}" if self.job_id else
            f"skipped ({self.skipped_reason})" if self.skipped_reason else f"loop: {self.loop_step}"
        )


# ---------------------------------------------------------------------------
# The loop: a lineage's generator settings, the models that generate each
# generation (base, trained, remote) and the runs of the built-in trainer.
# They live here, not on curation's models: generation depends on curation,
# never the reverse (DESIGN.md).


class LoopMode(models.TextChoices):
    """What generation N+1's student is."""

    FIXED = "fixed", "Fixed: the configured backend and model"
    TRAIN = "train", "Train: the built-in trainer fine-tunes the student on training set N"
    EXTERNAL = "external", "External: a model registered through the API"


class GeneratorSettings(models.Model):
    """How a lineage generates: backend, sampling, seeding from accepted samples, loop mode."""

    lineage = models.OneToOneField("curation.Lineage", on_delete=models.CASCADE, related_name="generator")
    backend = models.CharField(max_length=50, blank=True, help_text="Registry name; empty uses the default.")
    backend_model = models.CharField(max_length=200, blank=True, help_text="Model name for HTTP backends.")
    backend_base_url = models.URLField(
        blank=True, validators=[validate_url],
        help_text="OpenAI-compatible base URL, e.g. http://vllm:8000/v1; empty uses the setting. Its host must be "
                  "on OUROBOROS_BACKEND_ALLOWED_HOSTS.",
    )
    backend_api_key_env = models.CharField(
        max_length=100, blank=True, validators=[validate_key_env],
        help_text="NAME of the environment variable that holds the API key (never the key); it must start with "
                  "OUROBOROS_BACKEND_KEY_ENV_PREFIX.",
    )
    critique = models.BooleanField(default=False, help_text="Add a tutor critique turn after the student's answer.")
    student_answers = models.PositiveSmallIntegerField(default=3, help_text="k answers per question.")
    temperature = models.FloatField(default=0.7)
    # Seeding (the data side of recursion, as in Self-Instruct).
    synthetic_context_fraction = models.FloatField(
        default=0.0,
        help_text="Share of a job's items (0-1) whose tutor material is an accepted record of the latest "
                  "published training set instead of a real passage.",
    )
    style_examples = models.PositiveSmallIntegerField(
        default=0, help_text="Up to this many accepted questions of earlier generations shown to the tutor as examples."
    )
    # Training (the model side of recursion).
    loop_mode = models.CharField(max_length=10, choices=LoopMode.choices, default=LoopMode.FIXED)
    webhook_url = models.URLField(
        blank=True, validators=[validate_url],
        help_text="Called when a training set is published (external trainers); on the backend allowlist.",
    )
    webhook_secret_env = models.CharField(
        max_length=100, blank=True, validators=[validate_key_env],
        help_text="NAME of the environment variable holding the webhook's HMAC secret (the key-name rule applies).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "generator settings"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(synthetic_context_fraction__gte=0) & models.Q(synthetic_context_fraction__lte=1),
                name="generator_synthetic_fraction_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Generator of {self.lineage}"


def generator_settings_for(lineage) -> GeneratorSettings:
    """The lineage's generator settings, created with the defaults on first use."""
    settings_row, _ = GeneratorSettings.objects.get_or_create(lineage=lineage)
    return settings_row


class ModelRecord(models.Model):
    """One model that generates (or may generate) a lineage's samples: what it is and where it came from."""

    class Kind(models.TextChoices):
        BASE_GGUF = "base_gguf", "Base GGUF"
        MERGED_GGUF = "merged_gguf", "Merged GGUF (base + trained LoRA)"
        LORA_ADAPTER = "lora_adapter", "LoRA adapter (GGUF) on a base"
        REMOTE = "remote", "Remote endpoint"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending: not yet loaded and tried"
        READY = "ready", "Ready: loaded and generated once"
        FAILED = "failed", "Failed"

    lineage = models.ForeignKey(
        "curation.Lineage", on_delete=models.CASCADE, null=True, blank=True, related_name="models",
        help_text="Empty for a model every lineage shares (the embedded base).",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=200)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    training_set = models.ForeignKey(
        "curation.TrainingSet", on_delete=models.PROTECT, null=True, blank=True, related_name="models"
    )
    path = models.CharField(max_length=500, blank=True, help_text="Local file (GGUF), for local kinds.")
    base_url = models.URLField(blank=True, validators=[validate_url],
                               help_text="OpenAI-compatible base URL, for remote models; on the backend allowlist.")
    remote_model = models.CharField(max_length=200, blank=True, help_text="The served model name, for remote models.")
    api_key_env = models.CharField(
        max_length=100, blank=True, validators=[validate_key_env],
        help_text="NAME of the environment variable with the remote endpoint's API key, if it needs one.",
    )
    sha256 = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Training parameters.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Training and evaluation metrics.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}, {self.status})"

    def provenance(self) -> dict:
        """How a sample's provenance names this model."""
        return {"id": self.pk, "name": self.name, "kind": self.kind, "sha256": self.sha256}


def base_model_record() -> ModelRecord:
    """The record of the embedded base GGUF that every lineage starts from."""
    import hashlib

    from generation.backends.llama_cpp import GGUF_NAME, LlamaCppBackend, smollm2_path

    path = smollm2_path()
    record = ModelRecord.objects.filter(kind=ModelRecord.Kind.BASE_GGUF, lineage=None, path=str(path)).first()
    if record is not None:
        return record
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    record, _ = ModelRecord.objects.get_or_create(
        kind=ModelRecord.Kind.BASE_GGUF, lineage=None, path=str(path),
        defaults={"name": LlamaCppBackend.model or GGUF_NAME, "sha256": digest.hexdigest(),
                  "status": ModelRecord.Status.READY},
    )
    return record


class GenerationModels(models.Model):
    """The tutor and the student that generate one generation's samples."""

    generation = models.OneToOneField("curation.Generation", on_delete=models.CASCADE, related_name="models")
    tutor = models.ForeignKey(ModelRecord, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    student = models.ForeignKey(ModelRecord, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    recorded_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "generation models"

    def __str__(self) -> str:
        return f"Models of {self.generation}"


class TrainingRun(ClaimedWork):
    """One run of the built-in trainer: a student fine-tuned on a published training set.

    Its claim (ClaimedWork) is taken per chunk through curation.services.claims, as a job's is."""

    Status = GenerationJob.Status  # the same life as a job's: queued, running, then done, failed or cancelled
    ACTIVE = GenerationJob.ACTIVE

    lineage = models.ForeignKey("curation.Lineage", on_delete=models.CASCADE, related_name="training_runs")
    training_set = models.ForeignKey("curation.TrainingSet", on_delete=models.PROTECT, related_name="training_runs")
    base_model = models.ForeignKey(
        ModelRecord, on_delete=models.PROTECT, related_name="training_runs", help_text="The student fine-tuned."
    )
    output_model = models.ForeignKey(
        ModelRecord, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="What it made."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    seed = models.BigIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    checkpoint_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training run {self.pk} of {self.lineage_id} ({self.step}/{self.total_steps}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def progress_percent(self) -> int:
        return 100 if not self.total_steps else min(100, round(100 * self.step / self.total_steps))


# ---------------------------------------------------------------------------
# External trainers: the webhook told when a training set is published.


class WebhookDelivery(models.Model):
    """One call of a lineage's webhook about one published training set. The body is fixed when the
    delivery is queued and sent byte-identical on every try; each try is a WebhookAttempt."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed: tries exhausted or refused"

    EVENT_PUBLISHED = "training_set.published"

    lineage = models.ForeignKey("curation.Lineage", on_delete=models.CASCADE, related_name="webhook_deliveries")
    training_set = models.ForeignKey("curation.TrainingSet", on_delete=models.CASCADE,
                                     related_name="webhook_deliveries")
    event = models.CharField(max_length=50, default=EVENT_PUBLISHED)
    url = models.URLField(max_length=500, help_text="The lineage's webhook URL when the delivery was queued.")
    secret_env = models.CharField(max_length=100, help_text="The NAME of the variable holding the HMAC secret.")
    body = models.TextField(help_text="The JSON body, exactly as signed and sent.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["training_set", "event"], name="webhook_delivery_once_per_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event} of training set {self.training_set_id} to {self.url} ({self.status})"


class WebhookAttempt(models.Model):
    """One try of a delivery: what was answered (a status code) or what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    url = models.URLField(max_length=500)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        outcome = f"HTTP {self.status_code}" if self.status_code else (self.error[:60] or "no answer")
        return f"Delivery {self.delivery_id} try {self.number}: {outcome}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
