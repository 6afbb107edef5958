"""The loop's writes about models: registering an externally trained student for a generation.

(The built-in trainer's side of the loop lives beside this; see issue 13.)
"""
from __future__ import annotations

from django.conf import settings
from django.db import transaction

from curation.models import Generation, Lineage
from generation.backends import BackendConfig, BackendError, GenerationParams
from generation.backends.openai_compat import OpenAICompatBackend
from generation.models import GenerationJob, GenerationModels, ModelRecord
from ouroboros import egress

PROBE_MESSAGES = [{"role": "user", "content": "Reply with the single word: ready."}]


class StudentError(ValueError):
    """A student that cannot be registered; `field` names the input that was wrong."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def _check_open(generation: Generation) -> None:
    if generation.status != Generation.Status.OPEN:
        raise StudentError("generation", f"generation {generation.number} of {generation.lineage.slug} is "
                                         f"{generation.get_status_display().lower()}; register the student of "
                                         f"the open generation")


def remote_model_register(*, lineage: Lineage, base_url: str, remote_model: str, api_key_env: str = "",
                          name: str = "", created_by=None) -> ModelRecord:
    """Record a model served by an OpenAI-compatible endpoint, and try it once.

    1. The URL and the key variable's name must pass the egress policy
       (StudentError naming the field otherwise; nothing is recorded).
    2. The record is written as pending, then the endpoint is asked for one
       short chat completion (through the same checks the workers apply).
    3. It is marked ready, or failed with the reason. A model is used only
       after it has generated once (DESIGN.md's promises).
    """
    remote_model = (remote_model or "").strip()
    if not remote_model:
        raise StudentError("model", "name the model the endpoint serves, e.g. the name vLLM was started with")
    for field, problem in egress.settings_problems({"base_url": base_url, "api_key_env": api_key_env}).items():
        raise StudentError(field, problem)
    record = ModelRecord.objects.create(
        lineage=lineage, kind=ModelRecord.Kind.REMOTE, name=(name or remote_model)[:200], base_url=base_url,
        remote_model=remote_model, api_key_env=api_key_env, status=ModelRecord.Status.PENDING, created_by=created_by,
    )
    config = BackendConfig(base_url=base_url, model=remote_model, api_key_env=api_key_env,
                           timeout=settings.OUROBOROS["STUDENT_PROBE_TIMEOUT"])
    try:
        completion = OpenAICompatBackend(config).generate(
            PROBE_MESSAGES, GenerationParams(temperature=0.0, max_tokens=8, seed=0))
        if not completion.text.strip():
            raise BackendError(f"{base_url} returned an empty completion for model {remote_model!r}", permanent=True)
    except BackendError as exc:
        record.status, record.failure_reason = ModelRecord.Status.FAILED, str(exc)[:2000]
        record.save(update_fields=["status", "failure_reason"])
        return record
    record.status = ModelRecord.Status.READY
    record.metrics = {"probe": {"served_model": completion.model, "latency_ms": completion.latency_ms,
                                "completion_tokens": completion.completion_tokens}}
    record.save(update_fields=["status", "metrics"])
    return record


def generation_student_register(*, generation: Generation, model: ModelRecord) -> GenerationModels:
    """Make a ready model the student that generates this (open) generation.

    The generation is locked while it is checked and changed: it must be open,
    and have no samples and no active job yet, since one generation's samples
    come from one student.
    """
    with transaction.atomic():
        locked = Generation.objects.select_for_update().select_related("lineage").get(pk=generation.pk)
        _check_open(locked)
        if model.status != ModelRecord.Status.READY:
            raise StudentError("model", f"model {model.pk} is {model.status}, not ready"
                               + (f": {model.failure_reason}" if model.failure_reason else ""))
        if model.lineage_id not in (None, locked.lineage_id):
            raise StudentError("model", f"model {model.pk} belongs to another lineage")
        if locked.samples.exists() or GenerationJob.objects.filter(
                generation=locked, status__in=GenerationJob.ACTIVE).exists():
            raise StudentError("generation", f"generation {locked.number} of {locked.lineage.slug} already has "
                                             f"samples or a running job; a generation's samples come from one "
                                             f"student")
        models_row, _ = GenerationModels.objects.get_or_create(generation=locked)
        models_row.student = model
        models_row.save(update_fields=["student", "recorded_at"])
    return models_row


def generation_student_register_remote(*, generation: Generation, base_url: str, remote_model: str,
                                       api_key_env: str = "", name: str = "", created_by=None) -> ModelRecord:
    """What `POST /api/generations/{id}/student/` does: check the generation is open (before any request),
    record and try the endpoint, and make it the student when it works. A model that failed its try is
    kept (failed, with the reason) and StudentError names base_url."""
    _check_open(generation)
    record = remote_model_register(lineage=generation.lineage, base_url=base_url, remote_model=remote_model,
                                   api_key_env=api_key_env, name=name, created_by=created_by)
    if record.status != ModelRecord.Status.READY:
        raise StudentError("base_url", f"the endpoint failed its check (model {record.pk} recorded as failed): "
                                       f"{record.failure_reason}")
    generation_student_register(generation=generation, model=record)
    return record
