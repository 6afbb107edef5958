"""Generation jobs: one run of the tutor/student generator for a generation,
processed in chunks by Celery tasks on the `generation` queue."""
from __future__ import annotations

from django.conf import settings
from django.db import models


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
