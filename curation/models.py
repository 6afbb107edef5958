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

from curation.services.claims import ClaimedWork

EMBEDDING_DIM = settings.OUROBOROS["EMBEDDING_DIM"]

DEFAULT_REJECT_REASONS = ["hallucination", "duplicate", "off-topic", "low quality", "unsafe", "other"]


def default_reject_reasons() -> list[str]:
    return list(DEFAULT_REJECT_REASONS)


class WorkStatus(models.TextChoices):
    """The life of a unit of work a worker runs: an import, a re-flag run, an export."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Lineage(models.Model):
    """One recursive line of training data, with its settings and policy.

    Its generator settings (backend, sampling, loop mode) are generation's:
    `lineage.generator`, a generation.GeneratorSettings row.
    """

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    # Review settings.
    reject_reasons = models.JSONField(
        default=default_reject_reasons, blank=True,
        help_text="Reject reasons offered to reviewers, in key order 1-9; 'other' asks for text.",
    )
    lease_seconds = models.PositiveIntegerField(default=600, help_text="How long a shown card stays with its reviewer.")
    overlap_fraction = models.FloatField(
        default=0.0, help_text="Share of new samples (0–1) that a second reviewer also decides, blind, for agreement."
    )
    auto_review = models.BooleanField(
        default=False,
        help_text="For experiments: a system reviewer accepts what no flag marked and rejects what a flag marked "
                  "(marked as such in the log, left out of agreement).",
    )
    # Flag thresholds, set per lineage (`manage.py calibrate_flags` fits them).
    duplicate_threshold = models.FloatField(
        default=settings.OUROBOROS["DUPLICATE_THRESHOLD"],
        help_text=("Near-duplicate when P(duplicate) of the closest match (an earlier sample or the real data), "
                   "from the pair model, is at least this."),
    )
    hallucination_threshold = models.FloatField(
        default=settings.OUROBOROS["HALLUCINATION_THRESHOLD"],
        help_text="A sentence whose risk (1 − support) is at least this is unsupported, and flags the sample.",
    )
    # On by default: the model with the LM's features beats the one without on the public dev set, and
    # costs about 1.4 s a sample in all on this CPU (README "Flagging"); off is for lineages that need speed.
    lm_grounding = models.BooleanField(
        default=True, help_text="Also score sentences with the language model (PMI against the passage, "
                                "consistency with the alternatives): more accurate, about 1 s a sample slower.",
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
    heldout = models.BooleanField(
        default=False, help_text="In the held-out split: never tutor material, never in a training set; the "
                                 "student's perplexity on it is measured each generation (services/heldout.py).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "id"]
        constraints = [
            models.UniqueConstraint(fields=["lineage", "content_hash"], name="passage_unique_text_per_lineage"),
        ]
        indexes = [
            # Flagging asks, per batch, whether any of the lineage's passages still waits for its embedding.
            models.Index(fields=["lineage"], condition=Q(embedding__isnull=True), name="passage_unembedded_idx"),
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


class PassageImport(ClaimedWork):
    """An uploaded file of passages (JSONL, CSV or Parquet), imported by a Celery task.

    The file's bytes are kept in this row until the import finishes, so that
    any worker that reaches the database can read them: no shared disk, and the
    client's file name is only shown, never used as a path.
    """

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"

    Status = WorkStatus

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    filename = models.CharField(max_length=255, help_text="The client's name for the file; shown, never opened.")
    format = models.CharField(max_length=10, choices=Format.choices)
    skip_bad_lines = models.BooleanField(default=False)
    data = models.BinaryField(help_text="The uploaded bytes; emptied when the import finishes.")
    size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=list, blank=True, help_text="The first bad rows skipped: {line, field, error}.")
    skipped_total = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The first errors that failed it: {line, field, error}.")
    errors_total = models.PositiveIntegerField(default=0)
    ignored_columns = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "claimed_until"], name="import_status_claim")]

    def __str__(self) -> str:
        return f"import {self.pk} of {self.filename} into {self.lineage_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


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
    passage = models.ForeignKey(
        SourcePassage, on_delete=models.PROTECT, related_name="samples",
        help_text="The real passage at the root of the sample's ancestry (its own, or its parent's root).",
    )
    # Seeding: the accepted sample whose question and answer were the tutor's material.
    # Following parents ends at a sample asked about `passage` itself.
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children",
        help_text="The accepted sample this one was seeded from; empty when asked about a real passage.",
    )
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
    risk = models.FloatField(default=0.0, help_text="The highest flag score; the queue serves high risk first.")
    original_answer = models.TextField(blank=True, help_text="The generated answer, kept when a reviewer edits it.")
    double_review = models.BooleanField(default=False, help_text="Drawn for a second, blind review (agreement).")
    # The lease: who is shown this card now, and until when.
    leased_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
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
            # The queue's orders: highest risk first, most novel first (pending samples only).
            models.Index(fields=["lineage", "-risk", "id"], condition=Q(status="pending"), name="sample_pending_risk_idx"),
            models.Index(fields=["lineage", "-novelty", "id"], condition=Q(status="pending"),
                         name="sample_pending_novel_idx"),
            models.Index(fields=["lineage", "id"], condition=Q(status="pending"), name="sample_pending_oldest_idx"),
            # Second reviews and samples still waiting for flags are few: small partial indexes find them.
            models.Index(fields=["lineage", "id"], condition=Q(double_review=True), name="sample_double_review_idx"),
            models.Index(fields=["lineage"], condition=Q(status="pending", flagged_at__isnull=True),
                         name="sample_unflagged_idx"),
            # The API's sample list: a lineage's samples by status in id order, and riskiest first.
            models.Index(fields=["lineage", "status", "id"], name="sample_lineage_status_idx"),
            models.Index(fields=["lineage", "-risk", "id"], name="sample_lineage_risk_idx"),
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
    score = models.FloatField(help_text="A probability. Near-duplicate: P(duplicate) of the closest match. "
                                        "Hallucination: P(hallucinated) of the answer.")
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

    Status = WorkStatus

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
    # Moved by every chunk: a run left untouched lost its message or its worker (`flag_runs_requeue_stale`).
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "updated_at"], name="flagrun_status_updated")]

    def __str__(self) -> str:
        return f"Re-flag of {self.lineage} ({self.done}/{self.total}, {self.status})"

    @property
    def progress_percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.done / self.total))


class LineageFit(models.Model):
    """A flag model fitted to one lineage's review decisions, compared with the default (issue 15, item 3).

    The lineage's latest finished fit of a kind decides: adopted, its model
    scores that kind's flags (its probability is the calibrated score) under
    `detector_version`; not adopted, the default does. Flags change only when
    the lineage is re-flagged, which the lineage page offers.
    """

    Status = WorkStatus

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="flag_fits")
    kind = models.CharField(max_length=20, choices=Flag.Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    decisions = models.PositiveIntegerField(default=0, help_text="Decided samples fitted on (N).")
    positives = models.PositiveIntegerField(default=0, help_text="Of them, rejected for this kind's reason.")
    left_out = models.JSONField(default=dict, blank=True,
                                help_text="Decisions not used, by why: system reviewer, edited, no features.")
    model = models.JSONField(null=True, blank=True, help_text="The fitted weights (combiner.Model.as_dict).")
    lineage_auc = models.FloatField(null=True, blank=True, help_text="The lineage fit's cross-validated ROC-AUC.")
    default_auc = models.FloatField(null=True, blank=True, help_text="The default's ROC-AUC on the same decisions.")
    lineage_brier = models.FloatField(null=True, blank=True)
    default_brier = models.FloatField(null=True, blank=True)
    reliability = models.JSONField(default=list, blank=True,
                                   help_text="Binned out-of-fold probabilities against the observed rejection rate.")
    adopted = models.BooleanField(default=False)
    reason = models.TextField(blank=True, help_text="Why it was adopted or not, with the figures.")
    default_version = models.CharField(max_length=50, blank=True, help_text="The default detector it was compared with.")
    previous_version = models.CharField(max_length=60, blank=True, help_text="The lineage's detector before this fit.")
    detector_version = models.CharField(max_length=60, blank=True, help_text="The lineage's detector after this fit.")
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["lineage", "kind", "-id"], name="lineagefit_latest_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} fit of {self.lineage} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def left_out_text(self) -> str:
        """The decisions not used, by why, e.g. "8 system reviewer, 2 edited" (kinds with none omitted)."""
        return ", ".join(f"{count} {why}" for why, count in (self.left_out or {}).items() if count)

    @property
    def changes_version(self) -> bool:
        return self.status == self.Status.DONE and self.detector_version != self.previous_version


class Review(models.Model):
    """One reviewer decision. The log is append-only: an undo is a new row."""

    class Decision(models.TextChoices):
        ACCEPT = "accept", "Accept"
        REJECT = "reject", "Reject"
        EDIT = "edit", "Edit and accept"
        UNDO = "undo", "Undo"

    # PROTECT: a reviewed sample cannot be deleted, so the log is never rewritten by a cascade.
    sample = models.ForeignKey(Sample, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.CharField(max_length=500, blank=True)
    edited_answer = models.TextField(blank=True, help_text="For an edit: the answer as the reviewer left it.")
    undoes = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="undone_by",
        help_text="For an undo: the decision it reverts.",
    )
    bulk = models.BooleanField(default=False, help_text="Made by a bulk action on a selection.")
    system = models.BooleanField(
        default=False, help_text="Made by the system reviewer (the lineage's auto review), not a person; left out of κ."
    )
    overlap = models.BooleanField(
        default=False, help_text="A second reviewer's blind decision: measures agreement, leaves the status alone."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["reviewer", "-created_at"], name="review_by_reviewer_idx"),
            # Second reviews are few: reviewer agreement reads them through this small index.
            models.Index(fields=["sample"], condition=Q(overlap=True), name="review_overlap_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision} sample {self.sample_id}"


class TrainingSet(models.Model):
    """A frozen, checksummed snapshot of a generation's accepted samples plus real data.

    Building records its composition (the samples and passages below) and queues
    the exports; once every export is written the set is published with its
    manifest. A published set is immutable: database triggers (migration 0004)
    refuse any change to it or to its membership.
    """

    class Status(models.TextChoices):
        EXPORTING = "exporting", "Exporting"
        PUBLISHED = "published", "Published"

    lineage = models.ForeignKey(Lineage, on_delete=models.PROTECT, related_name="training_sets")
    generation = models.OneToOneField(Generation, on_delete=models.PROTECT, related_name="training_set")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.EXPORTING)
    seed = models.BigIntegerField(default=0, help_text="Seeds the real-data draw and the record order.")
    policy = models.JSONField(default=dict, blank=True, help_text="The lineage's policy when the set was built.")
    samples = models.ManyToManyField(Sample, related_name="training_sets", blank=True)
    passages = models.ManyToManyField(SourcePassage, related_name="training_sets", blank=True)
    sample_count = models.PositiveIntegerField(help_text="Synthetic records: accepted samples.")
    real_count = models.PositiveIntegerField(default=0, help_text="Real records: source passages.")
    export_path = models.CharField(max_length=500, help_text="The set's folder, relative to EXPORT_ROOT.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of manifest.json, once published.")
    manifest = models.JSONField(default=dict)
    built_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training set of {self.generation} ({self.sample_count} samples + {self.real_count} real)"

    @property
    def record_count(self) -> int:
        return self.sample_count + self.real_count


# ---------------------------------------------------------------------------
# The next generation: policy, published sets and their exports, metrics, gates.
# Kept as separate models (rather than more columns on Lineage) so that the
# policy and the watch over a lineage can change without touching its
# generator settings.


class LineagePolicy(models.Model):
    """How a lineage builds its next generation, and the gates that watch it for collapse.

    Defaults follow the literature the README cites: accumulate (Gerstgrasser
    et al. 2024) and a positive fraction of fresh real data each round
    (Alemohammad et al. 2023).
    """

    class Mode(models.TextChoices):
        ACCUMULATE = "accumulate", "Accumulate: every earlier accepted sample, plus this generation's"
        REPLACE = "replace", "Replace: only this generation's accepted samples"

    lineage = models.OneToOneField(Lineage, on_delete=models.CASCADE, related_name="policy")
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.ACCUMULATE)
    min_real_fraction = models.FloatField(
        default=0.2, help_text="The least share of a training set that must be real passages (0 to below 1)."
    )
    # Metric parameters.
    metrics_seed = models.BigIntegerField(default=0, help_text="Seed for the sampled metrics.")
    metrics_sample_size = models.PositiveIntegerField(
        default=1000, help_text="Above this many samples, pairwise distance and Vendi use a seeded sample."
    )
    coverage_radius = models.FloatField(
        default=0.5, help_text="A real passage is covered when an accepted sample is within this cosine distance."
    )
    # Gates: a blank threshold is off.
    gate_min_samples = models.PositiveIntegerField(
        default=10, help_text="Gates judge a generation only once it has this many samples (accepted, or generated)."
    )
    gate_min_diversity_ratio = models.FloatField(
        null=True, blank=True, default=0.8,
        help_text="At risk when accepted samples' mean pairwise cosine distance falls below this share of generation 0's.",
    )
    gate_max_duplicate_rate = models.FloatField(
        null=True, blank=True, default=0.5, help_text="At risk when more of the generated samples than this are near-duplicates."
    )
    gate_min_coverage = models.FloatField(
        null=True, blank=True, help_text="At risk when fewer real passages than this share are covered."
    )
    gate_max_hallucination_rate = models.FloatField(
        null=True, blank=True, help_text="At risk when more of the generated samples than this are flagged as hallucinations."
    )
    gate_max_perplexity_ratio = models.FloatField(
        null=True, blank=True, default=1.5,
        help_text="At risk when the student's held-out perplexity is above this many times generation 1's.",
    )
    # The held-out split of the real passages (the student-quality probe).
    heldout_fraction = models.FloatField(
        default=0.1, help_text="Share of the real passages held out (0 to 0.5): never tutor material, never trained on."
    )
    heldout_min = models.PositiveIntegerField(default=5, help_text="Hold out at least this many passages.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "lineage policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(min_real_fraction__gte=0) & Q(min_real_fraction__lt=1), name="policy_real_fraction_range"
            ),
            models.CheckConstraint(condition=Q(coverage_radius__gte=0) & Q(coverage_radius__lte=2),
                                   name="policy_coverage_radius_range"),
            models.CheckConstraint(condition=Q(heldout_fraction__gte=0) & Q(heldout_fraction__lte=0.5),
                                   name="policy_heldout_fraction_range"),
        ]

    def __str__(self) -> str:
        return f"{self.lineage}: {self.mode}, at least {self.min_real_fraction:.0%} real"

    def snapshot(self) -> dict:
        """The policy in force, as recorded in a training set's manifest."""
        return {"mode": self.mode, "min_real_fraction": self.min_real_fraction}


class TrainingSetExport(ClaimedWork):
    """One file of a training set in one format, written by a Celery task with progress."""

    class Format(models.TextChoices):
        CHAT = "chat", "Chat messages JSONL"
        ALPACA = "alpaca", "Alpaca JSONL"
        PARQUET = "parquet", "Parquet"

    Status = WorkStatus

    training_set = models.ForeignKey("TrainingSet", on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=10, choices=Format.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    path = models.CharField(max_length=500, help_text="Relative to EXPORT_ROOT.")
    rows_total = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["training_set", "format"]
        constraints = [
            models.UniqueConstraint(fields=["training_set", "format"], name="export_one_per_format"),
        ]

    def __str__(self) -> str:
        return f"{self.get_format_display()} of {self.training_set} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE or not self.rows_total:
            return 100 if self.status == self.Status.DONE else 0
        return min(100, round(100 * self.rows_written / self.rows_total))


class GenerationMetrics(models.Model):
    """A generation's quality and diversity metrics, precomputed by a task (never in a request).

    The math is in curation/metrics.py; the README says where each metric comes from.
    """

    generation = models.OneToOneField(Generation, on_delete=models.CASCADE, related_name="metrics")
    fingerprint = models.CharField(max_length=64, help_text="What the metrics were computed from; stale when it changes.")
    computed_at = models.DateTimeField()
    generated = models.PositiveIntegerField(default=0, help_text="Samples generated (generation 0: real passages).")
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    accept_rate = models.FloatField(null=True, blank=True)
    flag_rates = models.JSONField(default=dict, blank=True)
    duplicate_rate = models.FloatField(null=True, blank=True)
    hallucination_rate = models.FloatField(null=True, blank=True)
    reject_reasons = models.JSONField(default=dict, blank=True)
    distinct_1 = models.FloatField(null=True, blank=True)
    distinct_2 = models.FloatField(null=True, blank=True)
    pairwise_distance = models.FloatField(null=True, blank=True)
    vendi = models.FloatField(null=True, blank=True)
    coverage = models.FloatField(null=True, blank=True)
    centroid_drift = models.FloatField(null=True, blank=True)
    selection_bias = models.FloatField(null=True, blank=True)
    agreement = models.JSONField(
        default=dict, blank=True, help_text="Decision pairs of two reviewers on one sample: a 2×2 table."
    )
    kappa = models.FloatField(null=True, blank=True)
    heldout_perplexity = models.FloatField(
        null=True, blank=True,
        help_text="The generation's student's perplexity on the held-out real passages (written by generation).",
    )
    params = models.JSONField(default=dict, blank=True)
    at_risk = models.BooleanField(default=False)
    risk_reasons = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["generation"]
        verbose_name_plural = "generation metrics"

    def __str__(self) -> str:
        return f"Metrics of {self.generation}"


class GatePause(models.Model):
    """The record of a gate pausing a lineage's schedules, and of the curator who resumed them."""

    lineage = models.ForeignKey(Lineage, on_delete=models.CASCADE, related_name="gate_pauses")
    generation = models.OneToOneField(Generation, on_delete=models.CASCADE, related_name="gate_pause")
    reasons = models.JSONField(default=list)
    schedule_ids = models.JSONField(default=list, help_text="The schedules this gate paused.")
    paused_at = models.DateTimeField(auto_now_add=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-paused_at"]

    def __str__(self) -> str:
        state = f"resumed {self.resumed_at:%Y-%m-%d %H:%M}" if self.resumed_at else "paused"
        return f"Gate on {self.generation}: {state}"
