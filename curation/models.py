"""The curation loop's data: lineages, their generations and real corpus,
generated samples, the flags detectors raise on them, reviewers' decisions and
the frozen training sets built from the accepted ones.

Words are as in DESIGN.md. Embeddings are pgvector columns with HNSW cosine
indexes so that nearest-neighbour look-ups stay in the database.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIM = settings.OUROBOROS["EMBEDDING_DIM"]


class Lineage(models.Model):
    """One recursive line of training data, with its settings and policy."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    # Generator settings (see generation/): which backend, how many student answers.
    backend = models.CharField(max_length=50, blank=True, help_text="Registry name; empty uses the default.")
    backend_model = models.CharField(max_length=200, blank=True)
    student_answers = models.PositiveSmallIntegerField(default=3, help_text="k answers per question.")
    temperature = models.FloatField(default=0.7)
    # Flag thresholds, set per lineage (`manage.py calibrate_flags` fits them).
    duplicate_threshold = models.FloatField(
        default=settings.OUROBOROS["DUPLICATE_THRESHOLD"],
        help_text="Near-duplicate when max(cosine, MinHash Jaccard) to an earlier sample or the real data is at least this.",
    )
    hallucination_threshold = models.FloatField(
        default=settings.OUROBOROS["HALLUCINATION_THRESHOLD"],
        help_text="A sentence whose risk (1 − support) is at least this is unsupported, and flags the sample.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Generation(models.Model):
    """One round of a lineage. Generation 0 is the real corpus; samples are
    generated into the open generation, and building its training set closes
    it and opens the next."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="generations")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["lineage", "number"]
        constraints = [
            models.UniqueConstraint(fields=["lineage", "number"], name="generation_unique_number"),
            # At most one open generation per lineage: jobs and the queue never have to choose.
            models.UniqueConstraint(
                fields=["lineage"], condition=Q(status="open"), name="generation_one_open_per_lineage"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lineage} · generation {self.number}"


class SourcePassage(models.Model):
    """A chunk of real, human text: what the tutor asks about and what answers are grounded in."""

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="passages")
    title = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    content_hash = models.CharField(max_length=64, help_text="sha256 of the text, for de-duplicating imports.")
    embedding = VectorField(dimensions=EMBEDDING_DIM, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "id"]
        constraints = [
            models.UniqueConstraint(fields=["lineage", "content_hash"], name="passage_unique_text_per_lineage"),
        ]
        indexes = [
            HnswIndex(
                name="passage_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.text[:60]


class PassageChunk(models.Model):
    """A sentence window of a source passage: the unit a generated sentence is grounded in.

    Whole passages are too coarse: one true sentence in a 200-word passage is
    only loosely similar to it. Windows of one and two sentences give a claim
    something of its own size to be compared with.
    """

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="passage_chunks")
    passage = models.ForeignKey(SourcePassage, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)

    class Meta:
        ordering = ["passage", "position"]
        constraints = [
            models.UniqueConstraint(fields=["passage", "position"], name="chunk_unique_position"),
        ]
        indexes = [
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.passage} [{self.position}]"


class DuplicateCluster(models.Model):
    """Samples that are near-duplicates of one another (single linkage through earlier samples).

    A sample joins the cluster of its nearest earlier duplicate, so a reviewer
    can keep the best one and reject the rest together.
    """

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="duplicate_clusters")
    representative = models.OneToOneField(
        "Sample", on_delete=models.CASCADE, related_name="represents", help_text="The earliest member."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "id"]

    def __str__(self) -> str:
        return f"Duplicate cluster {self.pk} of {self.lineage}"


# Near-duplicate and grounding look-ups use ef_construction 128, not pgvector's
# default 64: on 10^6 clustered 384-d vectors 64 reached only 0.95 recall@1 even
# at ef_search 400, 128 reached 0.985 at ef_search 100 (bench/vectors.py, README).


class Sample(models.Model):
    """One generated item: a tutor question about a passage and the student's answers."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="samples")
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="samples")
    job = models.ForeignKey(
        "generation.GenerationJob", on_delete=models.SET_NULL, null=True, blank=True, related_name="samples"
    )
    # Position of this sample within its job: (job, item_index) is the idempotency
    # key that makes a re-run chunk write nothing twice.
    item_index = models.PositiveIntegerField(null=True, blank=True)
    passage = models.ForeignKey(SourcePassage, on_delete=models.PROTECT, related_name="samples")
    question = models.TextField()
    answer = models.TextField()
    alt_answers = models.JSONField(default=list, blank=True, help_text="The student's other answers.")
    dialogue = models.JSONField(default=list, blank=True, help_text="The chat turns that produced the sample.")
    provenance = models.JSONField(
        default=dict, blank=True, help_text="backend, model, prompt version, temperature, seed, latency, tokens."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    embedding = VectorField(dimensions=EMBEDDING_DIM, null=True, blank=True)
    novelty = models.FloatField(null=True, blank=True, help_text="1 − the highest similarity to anything earlier.")
    # Detector outputs for every sample, flagged or not: calibration from past
    # review decisions needs the scores of the samples that were not flagged too.
    duplicate_score = models.FloatField(null=True, blank=True)
    hallucination_score = models.FloatField(null=True, blank=True)
    neighbours = models.JSONField(
        default=dict, blank=True, help_text="Nearest match in the batch, the lineage and the real data, with similarity."
    )
    cluster = models.ForeignKey(
        DuplicateCluster, on_delete=models.SET_NULL, null=True, blank=True, related_name="members"
    )
    minhash = ArrayField(models.BigIntegerField(), null=True, blank=True, help_text="MinHash signature of the text.")
    minhash_bands = ArrayField(models.BigIntegerField(), null=True, blank=True, help_text="LSH band keys.")
    detector_version = models.CharField(max_length=100, blank=True, help_text="Detectors that last scored it.")
    flagged_at = models.DateTimeField(null=True, blank=True, help_text="When the detectors last ran.")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "item_index"], name="sample_unique_job_item"),
        ]
        indexes = [
            models.Index(fields=["generation", "status", "flagged_at"], name="sample_queue_idx"),
            GinIndex(fields=["minhash_bands"], name="sample_minhash_bands_gin"),
            HnswIndex(
                name="sample_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"Sample {self.pk}: {self.question[:60]}"


class Flag(models.Model):
    """A detector's finding on a sample, with the evidence a reviewer needs to judge it."""

    class Kind(models.TextChoices):
        NEAR_DUPLICATE = "near_duplicate", "Near-duplicate"
        HALLUCINATION = "hallucination", "Likely hallucination"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="flags")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    score = models.FloatField(help_text="Near-duplicate: max(cosine, Jaccard). Hallucination: the riskiest sentence's risk.")
    evidence = models.JSONField(default=dict)
    detector_version = models.CharField(max_length=50)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sample", "kind"]
        constraints = [
            # Re-running a detector replaces its flag instead of adding a second one.
            models.UniqueConstraint(fields=["sample", "kind"], name="flag_one_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.score:.2f}) on sample {self.sample_id}"


class FlagRun(models.Model):
    """Re-flagging a lineage (after a detector or threshold change), processed in chunks on `curation`.

    The cursor is the last sample id done: samples are re-flagged in id order,
    so "everything before" means the same as when they were first flagged.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="flag_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    cursor = models.BigIntegerField(default=0, help_text="Samples with an id up to this are done.")
    chunk_size = models.PositiveIntegerField(default=50)
    detector_versions = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Re-flag of {self.lineage} ({self.done}/{self.total}, {self.status})"

    @property
    def progress_percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.done / self.total))


class Review(models.Model):
    """One reviewer decision. The log is append-only: an undo is a new row."""

    class Decision(models.TextChoices):
        ACCEPT = "accept", "Accept"
        REJECT = "reject", "Reject"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision} sample {self.sample_id}"


class TrainingSet(models.Model):
    """A frozen, checksummed snapshot of a generation's accepted samples, with its export."""

    lineage = models.ForeignKey(Lineage, on_delete=models.PROTECT, related_name="training_sets")
    generation = models.OneToOneField(Generation, on_delete=models.PROTECT, related_name="training_set")
    samples = models.ManyToManyField(Sample, related_name="training_sets", blank=True)
    sample_count = models.PositiveIntegerField()
    export_path = models.CharField(max_length=500, help_text="Relative to EXPORT_ROOT.")
    sha256 = models.CharField(max_length=64)
    manifest = models.JSONField(default=dict)
    built_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training set of {self.generation} ({self.sample_count} samples)"
