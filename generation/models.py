"""Generation jobs: one run of the tutor/student generator for a generation,
processed in chunks by Celery tasks on the `generation` queue."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class GenerationJob(models.Model):
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
    # The claim: whoever set claim_token holds the job until claimed_until.
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Who holds the claim (curation.services.claims.claim_owner): a starting worker
    # releases the claims of a dead predecessor on its host (that pid no longer alive).
    claimed_by = models.CharField(max_length=255, blank=True, help_text="The worker's name.")
    claimed_host = models.CharField(max_length=255, blank=True)
    claimed_pid = models.PositiveIntegerField(null=True, blank=True)
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
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.CharField(max_length=500, blank=True)
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.created_at:%Y-%m-%d %H:%M}: " + (
            f"job {self.job_id}" if self.job_id else f"skipped ({self.skipped_reason})"
        )
