from django.contrib import admin, messages

from curation.models import (
    DuplicateCluster,
    Flag,
    FlagRun,
    GatePause,
    Generation,
    GenerationMetrics,
    Lineage,
    LineagePolicy,
    Review,
    Sample,
    SourcePassage,
    TrainingSet,
    TrainingSetExport,
)
from curation.services.reflag import ReflagError, flag_run_create


class LineagePolicyInline(admin.StackedInline):
    model = LineagePolicy
    can_delete = False
    verbose_name_plural = "policy and gates"


@admin.register(Lineage)
class LineageAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "duplicate_threshold", "hallucination_threshold")
    prepopulated_fields = {"slug": ("name",)}
    # generation/admin.py adds its generator-settings inline and its "start a job" action.
    inlines = [LineagePolicyInline]
    actions = ["reflag"]

    @admin.action(description="Re-flag every sample of the selected lineages (a chunked job)")
    def reflag(self, request, queryset):
        for lineage in queryset:
            try:
                run = flag_run_create(lineage=lineage, created_by=request.user)
            except ReflagError as exc:
                self.message_user(request, f"{lineage}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{lineage}: re-flag run {run.pk} queued ({run.total} samples).",
                                  messages.SUCCESS)


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("lineage", "number", "status", "created_at", "closed_at")
    list_filter = ("lineage", "status")
    readonly_fields = ("closed_at",)


@admin.register(SourcePassage)
class SourcePassageAdmin(admin.ModelAdmin):
    list_display = ("title", "lineage", "created_at")
    list_filter = ("lineage",)
    search_fields = ("title", "text")
    exclude = ("embedding", "content_hash")


class FlagInline(admin.TabularInline):
    model = Flag
    extra = 0
    readonly_fields = ("kind", "score", "evidence", "detector_version", "created_at")
    can_delete = False


class ReviewInline(admin.TabularInline):
    """The sample's decisions, read-only: the log is append-only (see ReviewAdmin)."""

    model = Review
    fk_name = "sample"
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "reviewer", "decision", "reason", "overlap", "bulk", "undoes")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("id", "lineage", "generation", "status", "short_question", "novelty", "created_at")
    list_filter = ("lineage", "status", "generation__number")
    search_fields = ("question", "answer")
    exclude = ("embedding", "minhash", "minhash_bands")
    # What reviews decide (status, answer, the edit's original) and who holds the card are
    # written only by the review services, which log each change; here they are shown.
    readonly_fields = ("status", "answer", "original_answer", "leased_to", "lease_expires_at", "double_review",
                       "job", "item_index", "passage", "dialogue", "provenance", "flagged_at", "decided_at",
                       "novelty", "duplicate_score", "hallucination_score", "neighbours", "cluster", "detector_version")
    inlines = [FlagInline, ReviewInline]

    @admin.display(description="question")
    def short_question(self, obj):
        return obj.question[:80]

    def has_delete_permission(self, request, obj=None):
        # A reviewed sample is part of the decision log (the database refuses too: Review.sample is PROTECT).
        if obj is not None and obj.reviews.exists():
            return False
        return super().has_delete_permission(request, obj)


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    list_display = ("sample", "kind", "score", "detector_version", "created_at")
    list_filter = ("kind",)


@admin.register(FlagRun)
class FlagRunAdmin(admin.ModelAdmin):
    list_display = ("id", "lineage", "status", "done", "total", "created_at", "finished_at")
    list_filter = ("status", "lineage")
    readonly_fields = [f.name for f in FlagRun._meta.fields]


@admin.register(DuplicateCluster)
class DuplicateClusterAdmin(admin.ModelAdmin):
    list_display = ("id", "lineage", "representative", "created_at")
    list_filter = ("lineage",)
    raw_id_fields = ("representative",)


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    """The decision log, to read. Nobody adds, changes or deletes a decision here,
    superusers included: decisions come from the review services (an undo is a new row)."""

    list_display = ("sample", "reviewer", "decision", "reason", "overlap", "bulk", "created_at")
    list_filter = ("decision", "overlap", "bulk")
    readonly_fields = ("sample", "reviewer", "decision", "reason", "edited_answer", "undoes", "bulk", "overlap",
                       "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TrainingSetExportInline(admin.TabularInline):
    model = TrainingSetExport
    extra = 0
    can_delete = False
    readonly_fields = ("format", "status", "path", "rows_written", "rows_total", "sha256", "size_bytes", "error")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TrainingSet)
class TrainingSetAdmin(admin.ModelAdmin):
    list_display = ("generation", "status", "sample_count", "real_count", "sha256", "built_by", "created_at")
    readonly_fields = [f.name for f in TrainingSet._meta.fields] + ["samples", "passages"]
    inlines = [TrainingSetExportInline]

    def has_add_permission(self, request):
        return False  # built by the curator action, never by hand

    def has_change_permission(self, request, obj=None):
        return False  # published sets are immutable (the database refuses too)


@admin.register(GenerationMetrics)
class GenerationMetricsAdmin(admin.ModelAdmin):
    list_display = ("generation", "accepted", "accept_rate", "pairwise_distance", "vendi", "coverage", "at_risk",
                    "computed_at")
    list_filter = ("generation__lineage", "at_risk")

    def has_add_permission(self, request):
        return False  # computed by tasks

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GatePause)
class GatePauseAdmin(admin.ModelAdmin):
    list_display = ("generation", "paused_at", "resumed_at", "resumed_by")
    readonly_fields = ("lineage", "generation", "reasons", "schedule_ids", "paused_at", "resumed_at", "resumed_by",
                       "note")

    def has_add_permission(self, request):
        return False  # raised by gates, resumed from the dashboard
