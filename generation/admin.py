from django.contrib import admin

from generation.models import GenerationFailure, GenerationJob
from generation.services import job_cancel


class FailureInline(admin.TabularInline):
    model = GenerationFailure
    extra = 0
    readonly_fields = ("item_index", "reason", "raw_output", "created_at")
    can_delete = False


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ("id", "lineage", "generation", "status", "done_count", "failed_count", "requested", "created_at")
    list_filter = ("status", "lineage")
    readonly_fields = ("generation", "status", "done_count", "failed_count", "claim_token", "claimed_until",
                       "last_error", "created_by", "started_at", "finished_at", "seed")
    inlines = [FailureInline]
    actions = ["cancel"]

    def has_add_permission(self, request):
        return False  # jobs start from the lineage action or the lineage page, through the service

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        cancelled = sum(job_cancel(job=job) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} job(s).")
