from django import forms
from django.contrib import admin, messages

from curation.admin import LineageAdmin
from generation.backends import backend_refusal
from generation.errors import JobError
from generation.models import (
    GenerationFailure,
    GenerationJob,
    GenerationModels,
    GeneratorSettings,
    LineageSchedule,
    PromptTemplate,
    ScheduleRun,
    WebhookAttempt,
    WebhookDelivery,
)
from generation.services import (
    job_cancel,
    job_create,
    job_resume,
    prompt_template_save,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_sync,
)


class GeneratorSettingsForm(forms.ModelForm):
    class Meta:
        model = GeneratorSettings
        fields = "__all__"

    def clean_backend(self):
        name = self.cleaned_data.get("backend", "")
        if name and (refusal := backend_refusal(name)):
            raise forms.ValidationError(refusal)  # the same rule as the API and the worker
        return name


class GeneratorSettingsInline(admin.StackedInline):
    model = GeneratorSettings
    form = GeneratorSettingsForm
    can_delete = False
    verbose_name_plural = "generator settings"


@admin.action(description="Start a generation job (5 samples) for the selected lineages")
def start_job(modeladmin, request, queryset):
    for lineage in queryset:
        try:
            job = job_create(lineage=lineage, requested=5, created_by=request.user)
        except JobError as exc:
            modeladmin.message_user(request, f"{lineage}: {exc}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{lineage}: job {job.pk} queued.", messages.SUCCESS)


# curation's lineage admin gets generation's settings and action from here: curation never imports generation.
LineageAdmin.inlines = [*LineageAdmin.inlines, GeneratorSettingsInline]
LineageAdmin.actions = [start_job, *LineageAdmin.actions]


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
                       "claimed_by", "claimed_host", "claimed_pid",
                       "last_error", "created_by", "started_at", "finished_at", "seed")
    inlines = [FailureInline]
    actions = ["cancel", "resume"]

    def has_add_permission(self, request):
        return False  # jobs start from the lineage action or the lineage page, through the service

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        cancelled = sum(job_cancel(job=job) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} job(s).")

    @admin.action(description="Resume the selected failed or cancelled jobs")
    def resume(self, request, queryset):
        resumed = sum(job_resume(job=job) for job in queryset)
        self.message_user(request, f"Resumed {resumed} job(s).")


class PromptTemplateForm(forms.ModelForm):
    question_styles_text = forms.CharField(
        label="Question styles", required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One per line; the tutor is asked for one of them per item.",
    )

    class Meta:
        model = PromptTemplate
        fields = ["lineage", "tutor_system", "student_system", "critique_system", "note"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["question_styles_text"].initial = "\n".join(self.instance.question_styles or [])


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin):
    """Saving never edits a version in place: it writes the next one through the service."""

    form = PromptTemplateForm
    list_display = ("lineage", "version", "note", "created_by", "created_at")
    list_filter = ("lineage",)

    def has_delete_permission(self, request, obj=None):
        return False  # samples name these versions in their provenance

    def save_model(self, request, obj, form, change):
        styles = form.cleaned_data.get("question_styles_text", "").splitlines()
        try:
            saved = prompt_template_save(
                lineage=form.cleaned_data["lineage"],
                tutor_system=form.cleaned_data["tutor_system"],
                student_system=form.cleaned_data["student_system"],
                critique_system=form.cleaned_data.get("critique_system", ""),
                question_styles=styles,
                note=form.cleaned_data.get("note", ""),
                created_by=request.user,
            )
        except JobError as exc:
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)
            return
        obj.pk, obj.version = saved.pk, saved.version
        self.message_user(request, f"Saved as version {saved.version}; earlier versions are unchanged.")

    def save_related(self, request, form, formsets, change):
        pass  # no relations; the service wrote everything


class ScheduleRunInline(admin.TabularInline):
    model = ScheduleRun
    extra = 0
    readonly_fields = ("created_at", "job", "skipped_reason", "loop_step")
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LineageSchedule)
class LineageScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "lineage", "crontab_display", "requested", "max_backlog", "runs_loop", "enabled",
                    "paused_at", "last_firing")
    list_filter = ("lineage", "enabled", "runs_loop")
    readonly_fields = ("paused_at", "paused_reason", "resumed_at")

    @admin.display(description="last firing")
    def last_firing(self, obj) -> str:
        run = obj.runs.order_by("-created_at", "-id").first()
        if run is None:
            return "—"
        return f"{run.created_at:%Y-%m-%d %H:%M}: " + (
            f"skipped ({run.skipped_reason})" if run.skipped_reason else run.loop_step or f"job {run.job_id}")
    inlines = [ScheduleRunInline]
    actions = ["pause", "resume"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        schedule_sync(schedule=obj)

    def delete_model(self, request, obj):
        schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            schedule_delete(schedule=schedule)

    @admin.action(description="Pause the selected schedules")
    def pause(self, request, queryset):
        for schedule in queryset:
            schedule_pause(schedule=schedule, reason=f"paused by {request.user} in the admin")

    @admin.action(description="Resume the selected schedules")
    def resume(self, request, queryset):
        for schedule in queryset:
            schedule_resume(schedule=schedule)


@admin.register(GenerationModels)
class GenerationModelsAdmin(admin.ModelAdmin):
    list_display = ("generation", "tutor", "student", "recorded_at")

    def has_change_permission(self, request, obj=None):
        return False  # recorded by the first job of the generation


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ("number", "url", "status_code", "error", "started_at", "finished_at", "duration_ms")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The log of webhook calls: read-only, every try listed; a failed one can be sent again."""

    list_display = ("id", "lineage", "training_set", "event", "url", "status", "attempts", "last_status_code",
                    "created_at", "delivered_at")
    list_filter = ("status", "lineage")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False  # deliveries are written when a training set is published

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Send the selected failed deliveries again")
    def send_again(self, request, queryset):
        from generation.services.webhooks import webhook_send_again

        sent = sum(webhook_send_again(delivery=delivery) for delivery in queryset)
        self.message_user(request, f"Queued {sent} delivery(ies) again.")
