"""The model side of the loop: which tutor and student generate a generation, and their backends.

A lineage's loop mode (GeneratorSettings.loop_mode) decides generation N's student:

- `fixed`: the configured backend and model, for every generation (as before the loop);
- `train`: generation 1's student is the configured model; generation N > 1's is the
  ModelRecord the built-in trainer made from training set N-1 (ModelRecord.training_set);
- `external`: the model an external trainer registered for generation N through the API
  (`generation_student_register`); there is no fallback, not even for generation 1.

The tutor is always the configured backend and model: it asks the questions the student
answers, so what changes from one generation to the next is the model being trained.

The first job of a generation records its tutor and student in GenerationModels; every
later job of that generation uses the same two, whatever the settings say by then, and
every sample's provenance names them (`provenance["models"]`). When no student can be
resolved, the job is refused with a JobError that names the cause, and nothing is written.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.module_loading import import_string

from curation.models import Generation, Lineage, TrainingSet
from curation.services.heldout import heldout_split_ensure
from generation.backends import REGISTRY, BackendConfig, BackendError, GenerationParams, get_backend
from generation.backends.openai_compat import OpenAICompatBackend
from generation.errors import JobError
from generation.models import (
    GenerationJob,
    GenerationModels,
    LoopMode,
    ModelRecord,
    TrainingRun,
    base_model_record,
    generator_settings_for,
)

from ouroboros import egress

from .prompts import lineage_backend_config

LOCAL_KINDS = (ModelRecord.Kind.BASE_GGUF, ModelRecord.Kind.MERGED_GGUF, ModelRecord.Kind.LORA_ADAPTER)


def configured_model_record(*, lineage: Lineage) -> ModelRecord:
    """The record of the model the lineage's configured backend runs (the tutor; the fixed student).

    The embedded llama.cpp backend runs the base GGUF (one shared record with its
    sha256); any other backend is recorded per lineage as a remote model named
    `backend:model`, without a hash (the weights are not ours to read).
    """
    generator = generator_settings_for(lineage)
    name = generator.backend or settings.OUROBOROS["DEFAULT_BACKEND"]
    if name not in REGISTRY:
        raise JobError(f"lineage {lineage.name!r} names an unknown backend {name!r}")
    if name == "llama_cpp":
        try:
            return base_model_record()
        except BackendError as exc:
            raise JobError(str(exc)) from None
    config = lineage_backend_config(lineage=lineage)
    model = config.model if name == "openai" else getattr(import_string(REGISTRY[name]), "model", name)
    try:
        record, _ = ModelRecord.objects.get_or_create(
            lineage=lineage, kind=ModelRecord.Kind.REMOTE, name=f"{name}:{model}",
            base_url=config.base_url if name == "openai" else "", remote_model=model,
            defaults={"status": ModelRecord.Status.READY, "params": {"backend": name}},
        )
    except ValidationError as exc:  # a setting stored before the operator narrowed the egress rules
        problems = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
        raise JobError(f"lineage {lineage.name!r}: its backend cannot be used: {problems}") from None
    return record


def _training_set_of(*, lineage: Lineage, number: int) -> TrainingSet | None:
    return TrainingSet.objects.filter(lineage=lineage, generation__number=number).first()


def trained_student(*, generation: Generation) -> ModelRecord:
    """Loop mode `train`: the model trained from the previous generation's set, or a JobError saying why not.

    The refusals, in order: the previous generation has no training set; the set
    is empty; its training run is still going, failed or never started; the
    model it made failed its load-and-generate check.
    """
    lineage, previous = generation.lineage, generation.number - 1
    training_set = _training_set_of(lineage=lineage, number=previous)
    if training_set is None:
        raise JobError(f"loop mode train: generation {generation.number}'s student is trained on the training set "
                       f"of generation {previous}, and it has none")
    model = (ModelRecord.objects.filter(training_set=training_set, status=ModelRecord.Status.READY)
             .order_by("-created_at", "-id").first())
    if model is not None:
        return model
    prefix = (f"loop mode train: generation {generation.number} has no student yet: no model has been trained "
              f"on training set {training_set.pk} (generation {previous})")
    if training_set.sample_count + training_set.real_count == 0:
        raise JobError(f"{prefix}, and that set is empty: there is nothing to train on. Build a set with accepted "
                       f"samples or real passages, or switch the lineage to loop mode fixed")
    run = TrainingRun.objects.filter(training_set=training_set).order_by("-created_at", "-id").first()
    refused = ModelRecord.objects.filter(training_set=training_set, status=ModelRecord.Status.FAILED).first()
    if run is None and refused is not None:
        raise JobError(f"{prefix}; the trainer refused the set: {refused.failure_reason}")
    if run is None:
        raise JobError(f"{prefix}; no training run of it has started (it starts when the set is published)")
    if run.is_active:
        raise JobError(f"{prefix}; training run {run.pk} is {run.status} (step {run.step} of {run.total_steps})")
    failed = ModelRecord.objects.filter(training_set=training_set, status=ModelRecord.Status.FAILED).first()
    reason = run.error or (failed.failure_reason if failed else "") or run.status
    raise JobError(f"{prefix}; training run {run.pk} ended {run.status}: {reason}")


def student_resolve(*, generation: Generation, tutor: ModelRecord) -> ModelRecord:
    """Generation N's student under the lineage's loop mode; JobError naming the cause when there is none."""
    mode = generator_settings_for(generation.lineage).loop_mode
    recorded = GenerationModels.objects.filter(generation=generation, student__isnull=False).first()
    if recorded is not None:
        return recorded.student
    if mode == LoopMode.EXTERNAL:
        raise JobError(f"loop mode external: generation {generation.number} has no student registered; an external "
                       f"trainer registers one with POST /api/generations/{generation.pk}/student/")
    if mode == LoopMode.TRAIN and generation.number > 1:
        return trained_student(generation=generation)
    return tutor


def generation_models_record(*, generation: Generation) -> GenerationModels:
    """Resolve and record the generation's tutor and student (once); JobError when there is no student.

    Must run inside the caller's transaction (job_create's), so that a refusal
    writes nothing: no job, no record of models.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("generation_models_record must run inside a transaction")
    existing = (GenerationModels.objects.select_for_update(of=("self",)).select_related("tutor", "student")
                .filter(generation=generation).first())
    if existing is not None and existing.tutor_id and existing.student_id:
        return existing
    if generator_settings_for(generation.lineage).loop_mode != LoopMode.FIXED:
        # A student that changes is judged on real text it never saw: mark the split before any of it is used.
        heldout_split_ensure(lineage=generation.lineage)
    tutor = configured_model_record(lineage=generation.lineage)
    student = student_resolve(generation=generation, tutor=tutor)
    if student.status != ModelRecord.Status.READY:
        raise JobError(f"the student of generation {generation.number}, {student.name}, is {student.status}"
                       + (f": {student.failure_reason}" if student.failure_reason else ""))
    models, _ = GenerationModels.objects.update_or_create(
        generation=generation, defaults={"tutor": tutor, "student": student})
    if generator_settings_for(generation.lineage).loop_mode != LoopMode.FIXED and student.kind in LOCAL_KINDS:
        _measure_later(generation_id=generation.pk)
    return models


def _measure_later(*, generation_id: int) -> None:
    """Queue the student's held-out perplexity on `training` after commit (robust: a broker outage loses only it)."""
    from generation.tasks import record_heldout_perplexity

    transaction.on_commit(lambda: record_heldout_perplexity.apply_async((generation_id,), queue="training"),
                          robust=True)


def student_backend(*, models: GenerationModels | None, tutor_backend):
    """The backend that runs the generation's student: the tutor's own when they are one model.

    A local GGUF (base or merged) runs on the embedded llama.cpp backend with its
    file; a LoRA adapter on top of its parent's file; a remote model on the
    OpenAI-compatible backend at its URL.
    """
    if models is None or models.student_id is None or models.student_id == models.tutor_id:
        return tutor_backend
    record = models.student
    conf = settings.OUROBOROS
    if record.kind in (ModelRecord.Kind.BASE_GGUF, ModelRecord.Kind.MERGED_GGUF):
        return get_backend("llama_cpp", BackendConfig(model_path=record.path, timeout=conf["BACKEND_TIMEOUT"]))
    if record.kind == ModelRecord.Kind.LORA_ADAPTER:
        # The full GGUF under the adapter, not its parent: from generation 3 on the parent is an adapter
        # too (each generation continues the last LoRA, and its file holds the whole of it).
        from .training import model_gguf_root

        return get_backend("llama_cpp", BackendConfig(model_path=model_gguf_root(record).path, lora_path=record.path,
                                                      timeout=conf["BACKEND_TIMEOUT"]))
    backend = (record.params or {}).get("backend", "openai")
    return get_backend(backend, BackendConfig(
        base_url=record.base_url, model=record.remote_model, timeout=conf["BACKEND_TIMEOUT"],
        api_key_env=(getattr(record, "api_key_env", "") or (record.params or {}).get("api_key_env", "")
                     or conf["OPENAI_API_KEY_ENV"])))


def models_provenance(models: GenerationModels | None) -> dict:
    """How a sample's provenance names the generation's tutor and student."""
    if models is None:
        return {}
    return {"models": {role: record.provenance() for role, record in
                       (("tutor", models.tutor), ("student", models.student)) if record is not None}}


def training_start(*, training_set: TrainingSet, created_by=None) -> TrainingRun | None:
    """Loop mode train: start the built-in trainer on a published set, once.

    Returns the set's training run (an existing one, or the one started), or
    None when there is none: the set is empty (nothing to train on: the next
    job says so), or the trainer refused it; a refusal is recorded as a failed
    model of the set, with the trainer's reason, and the next job names it.
    """
    existing = TrainingRun.objects.filter(training_set=training_set).order_by("-created_at", "-id").first()
    if existing is not None:
        return existing
    if training_set.sample_count + training_set.real_count == 0:
        return None
    from generation.services.training import training_run_create  # the built-in trainer

    try:
        return training_run_create(training_set=training_set, created_by=created_by)
    except ValueError as exc:  # the trainer's refusals (an empty or too small set, a model it cannot load)
        ModelRecord.objects.create(
            lineage=training_set.lineage, kind=ModelRecord.Kind.MERGED_GGUF, training_set=training_set,
            name=f"{training_set.lineage.slug} student trained on generation {training_set.generation.number}",
            status=ModelRecord.Status.FAILED, failure_reason=str(exc)[:2000], created_by=created_by,
        )
        return None


def generation_student(*, generation: Generation) -> ModelRecord | None:
    """The generation's student: the recorded one, else what its first job would record; None when there is none."""
    recorded = GenerationModels.objects.filter(generation=generation, student__isnull=False).select_related(
        "student").first()
    if recorded is not None:
        return recorded.student
    try:
        return student_resolve(generation=generation, tutor=configured_model_record(lineage=generation.lineage))
    except JobError:
        return None


def heldout_perplexity_record(*, generation: Generation) -> float | None:
    """Measure the generation's student on the held-out split; store it on the generation's metrics.

    1. The student (recorded, or resolved as its first job would) and the split's texts.
    2. The perplexity: the trainer's `student_perplexity` (mean token negative
       log-likelihood of each passage under the model, exponentiated), cached
       on the model's record per split, since the base model is every lineage's
       first student.
    3. Store it on GenerationMetrics (a placeholder row, stale, when the metrics
       task has not run yet: it keeps the value when it does) and check the
       gates, among them "held-out perplexity above X times generation 1's".
    Returns None (and writes nothing) when there is no split, no student, or a
    remote student, whose weights cannot be read here.
    """
    from django.utils import timezone

    from curation.models import GenerationMetrics
    from curation.services.gates import gates_check
    from curation.services.heldout import heldout_digest, heldout_texts

    lineage = generation.lineage
    texts = heldout_texts(lineage=lineage)
    student = generation_student(generation=generation)
    if not texts or student is None or student.kind not in LOCAL_KINDS:
        return None
    digest = heldout_digest(lineage=lineage)
    cached = ((student.metrics or {}).get("heldout_perplexity") or {}).get(digest)
    if cached is None:
        from generation.services.training import student_perplexity  # the built-in trainer's measure

        measured = student_perplexity(model=student, texts=texts)
        # The trainer returns {"perplexity", "tokens", "nll", "per_text", ...}; a bare number is taken as is.
        cached = float(measured["perplexity"] if isinstance(measured, dict) else measured)
        per_text = measured.get("per_text") if isinstance(measured, dict) else None
        with transaction.atomic():
            locked = ModelRecord.objects.select_for_update().get(pk=student.pk)
            metrics = dict(locked.metrics or {})
            metrics["heldout_perplexity"] = {**(metrics.get("heldout_perplexity") or {}), digest: cached}
            if per_text:  # each passage's (nll, tokens), in id order: what a bootstrap over the split resamples
                metrics["heldout_per_text"] = {**(metrics.get("heldout_per_text") or {}), digest: per_text}
            ModelRecord.objects.filter(pk=student.pk).update(metrics=metrics)
    row, _ = GenerationMetrics.objects.get_or_create(
        generation=generation, defaults={"fingerprint": "", "computed_at": timezone.now()})
    GenerationMetrics.objects.filter(pk=row.pk).update(heldout_perplexity=cached)
    row.heldout_perplexity = cached
    gates_check(metrics=row)
    return cached


# ---------------------------------------------------------------- external trainers: registering a student

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
