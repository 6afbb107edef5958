"""The built-in trainer: fine-tune the student on a published training set, in chunks.

How a run goes (each step is a function below; the task `generation.train_student`
calls `training_run_chunk` and nothing else):
1. `training_run_create` checks what can be checked at once (the set is published,
   its chat export is written, it has enough records, the student is a local GGUF,
   the parameters are valid), stores a queued run and queues its first chunk after
   the transaction commits. It refuses anything else with a TrainingError that
   names the cause.
2. `training_run_chunk` claims the run (a conditional update with a lease, see
   STYLE.md section 4; the claim records the worker, host and pid), loads the student with transformers + peft (or reuses the
   one this process loaded for the previous chunk), runs up to `checkpoint_every`
   steps, writes a checkpoint, records progress and queues the next chunk. Each
   step renews the short lease (OUROBOROS_TRAINING_LEASE_SECONDS). A worker killed
   mid-chunk loses at most that chunk: a worker starting on its host frees the
   dead pid's claim at once (`training_runs_release_dead`), a redelivered task
   takes it over, and on another host the lease runs out and
   `training_runs_requeue_stale` queues the run again. The next worker resumes
   from the last checkpoint.
3. After the last step the adapter is written twice: in peft's format (the next
   generation continues from it) and as a llama.cpp LoRA GGUF (what serves). Then
   `model_verify` loads it in llama.cpp and generates once; only then is the model
   ready. A model that fails is recorded as failed with the reason, and so is the run.

Cancelling sets the status; the running chunk sees it at its next step and stops.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from curation.models import TrainingSet, TrainingSetExport
from curation.services import claims
from curation.services.exports import ExportError, export_file
from generation.backends.base import BackendConfig
from generation.models import GenerationModels, ModelRecord, TrainingRun, base_model_record
from generation.training.data import TrainingDataError, examples_from_chat, read_chat_jsonl
from generation.training.lora import LoraTrainer, ModelLoadError, TrainConfig, checkpoint_step, load_student

log = logging.getLogger(__name__)

LOCAL_KINDS = (ModelRecord.Kind.BASE_GGUF, ModelRecord.Kind.MERGED_GGUF, ModelRecord.Kind.LORA_ADAPTER)


class TrainingError(ValueError):
    """A training request that cannot be honoured, or a run that cannot go on; the message says why."""


# Where things are --------------------------------------------------------


def model_root() -> Path:
    return Path(settings.OUROBOROS["MODEL_ROOT"])


def run_folder(run: TrainingRun) -> Path:
    return model_root() / "runs" / f"run-{run.pk}"


def model_gguf_root(model: ModelRecord) -> ModelRecord:
    """The full GGUF under a model: itself, or for an adapter the base it applies to."""
    seen = set()
    while model.kind == ModelRecord.Kind.LORA_ADAPTER:
        if model.parent_id is None or model.pk in seen:
            raise TrainingError(f"adapter {model.name!r} has no base model recorded")
        seen.add(model.pk)
        model = model.parent
    if model.kind == ModelRecord.Kind.REMOTE:
        raise TrainingError(f"model {model.name!r} is a remote endpoint, not a local GGUF")
    return model


def model_backend_config(*, model: ModelRecord) -> BackendConfig:
    """How the llama_cpp backend loads a local model record (base, merged, or base + adapter)."""
    if model.kind == ModelRecord.Kind.REMOTE:
        return BackendConfig(base_url=model.base_url, model=model.remote_model)
    root = model_gguf_root(model)
    lora = model.path if model.kind == ModelRecord.Kind.LORA_ADAPTER else ""
    return BackendConfig(model=model.name, model_path=root.path, lora_path=lora)


def _adapter_dir(model: ModelRecord) -> Path | None:
    """The peft adapter a LoRA record was written from (what the next run continues)."""
    if model.kind != ModelRecord.Kind.LORA_ADAPTER:
        return None
    folder = model.params.get("peft_adapter") or ""
    if not folder or not Path(folder).is_dir():
        raise TrainingError(f"adapter {model.name!r} has no peft adapter folder to continue from ({folder or 'none'})")
    return Path(folder)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Creating a run ----------------------------------------------------------


def training_set_chat_file(*, training_set: TrainingSet) -> Path:
    """The set's chat-messages export, or TrainingError saying why there is none to train on."""
    if training_set.status != TrainingSet.Status.PUBLISHED:
        raise TrainingError(f"training set {training_set.pk} is not published yet ({training_set.status}); "
                            "a run trains on a published set only")
    export = training_set.exports.filter(format=TrainingSetExport.Format.CHAT).first()
    if export is None:
        raise TrainingError(f"training set {training_set.pk} has no chat-messages export to train on")
    try:
        return export_file(export=export)
    except ExportError as exc:
        raise TrainingError(f"training set {training_set.pk}: {exc}") from None


def current_student(*, training_set: TrainingSet) -> ModelRecord:
    """The student that generated the set's generation, else the embedded base."""
    models = GenerationModels.objects.filter(generation=training_set.generation).select_related("student").first()
    if models and models.student and models.student.kind in LOCAL_KINDS:
        return models.student
    return base_model_record()


def training_run_create(*, training_set: TrainingSet, created_by=None, params: dict | None = None,
                        base_model: ModelRecord | None = None) -> TrainingRun:
    """Queue a run that fine-tunes `base_model` (default: the set's student) on the set's chat export."""
    params = dict(params or {})
    params.setdefault("seed", training_set.seed)
    try:
        config = TrainConfig.from_params(params)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    chat = training_set_chat_file(training_set=training_set)
    minimum = settings.OUROBOROS["TRAINING_MIN_RECORDS"]
    if training_set.record_count == 0:
        raise TrainingError(f"training set {training_set.pk} is empty: nothing to train on")
    if training_set.record_count < minimum:
        raise TrainingError(f"training set {training_set.pk} has {training_set.record_count} records; "
                            f"training needs at least {minimum} (OUROBOROS_TRAINING_MIN_RECORDS)")
    student = base_model or current_student(training_set=training_set)
    if student.kind not in LOCAL_KINDS:
        raise TrainingError(f"the student {student.name!r} is a {student.get_kind_display().lower()}; "
                            "the built-in trainer fine-tunes local GGUF models only")
    if student.status != ModelRecord.Status.READY:
        raise TrainingError(f"the student {student.name!r} is {student.status}, not ready: "
                            f"{student.failure_reason or 'it has not been loaded and tried'}")
    gguf = Path(model_gguf_root(student).path)
    if not gguf.is_file():
        raise TrainingError(f"the student's GGUF file {gguf} is missing")
    _adapter_dir(student)  # refuses now an adapter that cannot be continued
    with transaction.atomic():
        run = TrainingRun.objects.create(
            lineage=training_set.lineage, training_set=training_set, base_model=student, seed=config.seed,
            params={**config.as_params(), "chat_export": str(chat)}, created_by=created_by,
        )
        _enqueue(run.pk)
    return run


def _enqueue(run_id: int) -> None:
    from generation.tasks import train_student  # tasks import services; import late to avoid a cycle

    transaction.on_commit(lambda: train_student.delay(run_id), robust=True)


def training_run_cancel(*, run: TrainingRun) -> bool:
    """Stop a run at its next step. False when it had already ended."""
    return bool(TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.ACTIVE).update(
        status=TrainingRun.Status.CANCELLED, finished_at=timezone.now(), claim_token=None, claimed_until=None,
        eta_seconds=None, updated_at=timezone.now(),
    ))


def training_run_fail(*, run_id: int, reason: str) -> None:
    TrainingRun.objects.filter(pk=run_id, status__in=TrainingRun.ACTIVE).update(
        status=TrainingRun.Status.FAILED, error=reason[:2000], finished_at=timezone.now(), claim_token=None,
        claimed_until=None, eta_seconds=None, updated_at=timezone.now(),
    )
    _session_drop()


# Claims ------------------------------------------------------------------


def _lease() -> timedelta:
    return timedelta(seconds=settings.OUROBOROS["TRAINING_LEASE_SECONDS"])


def _claim(run_id: int) -> uuid.UUID | None:
    """Take the run for one chunk: queued, between chunks (no claim), with an expired claim, or
    held by a dead process on this host (curation.services.claims, as a job's chunk does)."""
    return claims.chunk_claim(TrainingRun, run_id, lease=_lease())


def _holding(run_id: int, token: uuid.UUID, **fields) -> bool:
    """Record progress and extend the claim; False when the run was cancelled or taken over."""
    now = timezone.now()
    return bool(TrainingRun.objects.filter(pk=run_id, claim_token=token, status=TrainingRun.Status.RUNNING)
                .update(claimed_until=now + _lease(), updated_at=now, **fields))


def training_runs_release_dead() -> list[int]:
    """Queue again, at once, every active run whose claim a dead process on this host holds.

    Called by a worker as it starts (curation.extensions.dead_claims_releasers):
    the trainer it replaces died mid-chunk, and the run resumes from its last
    checkpoint without waiting for the lease to run out.
    """
    ids = claims.claims_release_dead(TrainingRun)
    for run_id in ids:
        with transaction.atomic():
            _enqueue(run_id)
    return ids


def training_runs_requeue_stale() -> list[int]:
    """Queue again the runs nobody works on: a claim that ran out (a dead worker), or a lost message."""
    now = timezone.now()
    idle = now - timedelta(seconds=settings.OUROBOROS["TRAINING_IDLE_SECONDS"])
    stale = list(TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).filter(
        Q(claimed_until__lt=now) | Q(claimed_until__isnull=True, updated_at__lt=idle)
    ).values_list("id", flat=True))
    for run_id in stale:
        _enqueue(run_id)
    return stale


# The process's loaded student --------------------------------------------
# Loading takes ~25 s; a worker keeps the run it trains between its chunks. The
# cache is trusted only when its step is the run's step (nobody else moved it).


@dataclass
class _Session:
    run_id: int
    trainer: LoraTrainer
    start_step: int  # where this process took the run up: its rate and ETA count from here
    tokens: int = 0
    seconds: float = 0.0


_SESSION: _Session | None = None


def _session_drop() -> None:
    global _SESSION
    _SESSION = None


def _training_device() -> str:
    device = settings.OUROBOROS["TRAINING_DEVICE"]
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"OUROBOROS_TRAINING_DEVICE={device} but torch sees no CUDA device on this worker")
    torch.set_num_threads(settings.OUROBOROS["TRAINING_THREADS"])
    return device


def _session_for(run: TrainingRun) -> _Session:
    global _SESSION
    checkpoints = run_folder(run) / "checkpoints"
    if (_SESSION is not None and _SESSION.run_id == run.pk
            and _SESSION.trainer.step == checkpoint_step(checkpoints)):
        return _SESSION
    _SESSION = None
    device = _training_device()
    config = TrainConfig.from_params({k: v for k, v in run.params.items() if k != "chat_export"})
    student = run.base_model
    model, tokenizer = load_student(gguf_path=Path(model_gguf_root(student).path),
                                    adapter_dir=_adapter_dir(student), config=config, device=device)
    try:
        conversations = read_chat_jsonl(Path(run.params["chat_export"]))
    except TrainingDataError as exc:
        raise TrainingError(str(exc)) from None
    examples = examples_from_chat(tokenizer, conversations, max_tokens=config.max_tokens)
    if len(examples) < settings.OUROBOROS["TRAINING_MIN_RECORDS"]:
        raise TrainingError(f"the chat export has {len(examples)} conversations with an assistant turn; "
                            f"training needs at least {settings.OUROBOROS['TRAINING_MIN_RECORDS']}")
    trainer = LoraTrainer(model=model, tokenizer=tokenizer, examples=examples, config=config, device=device)
    if trainer.state_load(checkpoints):
        log.info("training run %s resumes from the checkpoint at step %s", run.pk, trainer.step)
    _SESSION = _Session(run_id=run.pk, trainer=trainer, start_step=trainer.step)
    return _SESSION


# Running -----------------------------------------------------------------


@dataclass
class TrainOutcome:
    claimed: bool
    steps: int = 0
    finished: bool = False


def training_run_chunk(*, run_id: int) -> TrainOutcome:
    """Run one chunk of the run (up to `checkpoint_every` steps), checkpoint, queue the next."""
    token = _claim(run_id)
    if token is None:
        return TrainOutcome(claimed=False)
    run = TrainingRun.objects.select_related("base_model", "training_set", "lineage").get(pk=run_id)
    try:
        # Loading takes from ~25 s to minutes on a loaded machine, and no step renews the lease meanwhile.
        with claims.lease_kept(TrainingRun, run_id, token, lease=_lease()):
            session = _session_for(run)
    except (TrainingError, ModelLoadError) as exc:
        training_run_fail(run_id=run_id, reason=str(exc))
        return TrainOutcome(claimed=True)
    trainer = session.trainer
    # The checkpoint is the truth: the row's step goes back to it when a run resumes.
    checkpoints = run_folder(run) / "checkpoints"
    if not _holding(run_id, token, step=trainer.step, total_steps=trainer.total_steps,
                    checkpoint_path=str(checkpoints)):
        _session_drop()
        return TrainOutcome(claimed=True)
    steps = 0
    while not trainer.done and steps < trainer.config.checkpoint_every:
        result = trainer.train_step()
        steps += 1
        session.tokens += result.tokens
        session.seconds += result.seconds
        per_step = session.seconds / max(1, trainer.step - session.start_step)
        if not _holding(run_id, token, step=trainer.step, loss=result.loss,
                        tokens_per_s=session.tokens / session.seconds,
                        eta_seconds=round(per_step * (trainer.total_steps - trainer.step))):
            log.info("training run %s was cancelled or taken over at step %s", run_id, trainer.step)
            _session_drop()
            return TrainOutcome(claimed=True, steps=steps)
    trainer.state_save(checkpoints)
    if not trainer.done:
        with transaction.atomic():
            # Between chunks the run holds no claim: the next chunk's task (or any worker) takes it.
            released = TrainingRun.objects.filter(pk=run_id, claim_token=token, status=TrainingRun.Status.RUNNING) \
                .update(claim_token=None, claimed_until=None, updated_at=timezone.now())
            if not released:
                _session_drop()
                return TrainOutcome(claimed=True, steps=steps)
            _enqueue(run_id)
        return TrainOutcome(claimed=True, steps=steps)
    with claims.lease_kept(TrainingRun, run_id, token, lease=_lease()):  # writing and checking: minutes
        _finish(run, token, session)
    return TrainOutcome(claimed=True, steps=steps, finished=True)


def _finish(run: TrainingRun, token: uuid.UUID, session: _Session) -> None:
    """Write the adapter (peft and GGUF), load it in llama.cpp and generate once, register the model."""
    from generation.training.gguf_lora import write_lora_gguf
    from peft import get_peft_model_state_dict

    trainer = session.trainer
    base = model_gguf_root(run.base_model)
    folder = model_root() / "adapters" / f"run-{run.pk}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "peft").mkdir(parents=True)
    trainer.adapter_save(folder / "peft")
    gguf_path = folder / "adapter.gguf"
    config = trainer.model.config
    write_lora_gguf(state_dict=get_peft_model_state_dict(trainer.model), path=gguf_path,
                    alpha=trainer.config.lora_alpha, n_head=config.num_attention_heads,
                    n_head_kv=config.num_key_value_heads, name=f"run-{run.pk}")
    metrics = {"final_loss": _run_loss(run), "tokens_per_s": session.tokens / session.seconds if session.seconds else None,
               "steps": trainer.step, "examples": len(trainer.examples),
               "device": trainer.device, "train_seconds_this_worker": round(session.seconds, 1),
               # 0 for a run one worker trained from the start; else the checkpoint the last worker resumed.
               "resumed_from_step": session.start_step}
    generation = run.training_set.generation
    fields = dict(
        lineage=run.lineage, kind=ModelRecord.Kind.LORA_ADAPTER,
        name=f"{base.name}+lora-{run.lineage.slug}-g{generation.number}-run{run.pk}",
        parent=run.base_model, training_set=run.training_set, path=str(gguf_path), sha256=sha256_of(gguf_path),
        params={**trainer.config.as_params(), "peft_adapter": str(folder / "peft"), "training_run": run.pk},
        metrics=metrics, created_by=run.created_by, status=ModelRecord.Status.PENDING, failure_reason="",
    )
    # A worker that died between writing the record and ending the run left it behind: the
    # retry rewrites that record rather than adding a second one.
    record = ModelRecord.objects.filter(kind=ModelRecord.Kind.LORA_ADAPTER, params__training_run=run.pk).first()
    if record is None:
        record = ModelRecord.objects.create(**fields)
    else:
        ModelRecord.objects.filter(pk=record.pk).update(**fields)
        record.refresh_from_db()
    _session_drop()
    ok = model_verify(model=record)
    with transaction.atomic():
        fields = {"output_model": record, "finished_at": timezone.now(), "claim_token": None, "claimed_until": None,
                  "eta_seconds": None}
        if ok:
            fields["status"] = TrainingRun.Status.DONE
        else:
            record.refresh_from_db()
            fields.update(status=TrainingRun.Status.FAILED,
                          error=f"the trained model failed its check in llama.cpp: {record.failure_reason}")
        TrainingRun.objects.filter(pk=run.pk, claim_token=token).update(**fields)
    if ok:  # the adapter holds everything now; a failed run keeps its checkpoint for a look
        shutil.rmtree(run_folder(run) / "checkpoints", ignore_errors=True)


def _run_loss(run: TrainingRun) -> float | None:
    return TrainingRun.objects.filter(pk=run.pk).values_list("loss", flat=True).first()


# Registering a model: load it and generate once ---------------------------


VERIFY_TIMEOUT_SECONDS = 600  # loading and 16 tokens; generous for a loaded machine


def model_verify(*, model: ModelRecord) -> bool:
    """Load the model in llama.cpp and generate once; the record becomes ready, or failed with the reason.

    The check runs in a child process (generation/training/verify.py): llama.cpp
    may crash on a bad file instead of raising, and must not take the worker with it.
    """
    import subprocess
    import sys

    reason = ""
    try:
        config = model_backend_config(model=model)
    except TrainingError as exc:
        config, reason = None, str(exc)
    if config is not None and not config.model_path:
        reason = "a remote model is checked by its endpoint, not by llama.cpp"
    elif config is not None:
        missing = [p for p in (config.model_path, config.lora_path) if p and not Path(p).is_file()]
        if missing:
            reason = f"the model file {missing[0]} does not exist"
        else:
            argv = [sys.executable, "-m", "generation.training.verify", config.model_path]
            argv += [config.lora_path] if config.lora_path else []
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_SECONDS,
                                      cwd=settings.BASE_DIR, env={**os.environ, "OUROBOROS_LLAMA_THREADS": str(
                                          settings.OUROBOROS["LLAMA_THREADS"])})
            except subprocess.TimeoutExpired:
                reason = f"llama.cpp did not load and generate within {VERIFY_TIMEOUT_SECONDS} s"
            else:
                if done.returncode != 0:
                    tail = " ".join((done.stderr or "").strip().splitlines()[-2:])[-300:]
                    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
                    reason = f"llama.cpp could not load or run it ({how}): {tail or 'no message'}"
                else:
                    try:
                        text = json.loads(done.stdout.strip().splitlines()[-1])["text"]
                    except (ValueError, IndexError, KeyError):
                        text = ""
                    if not text.strip():
                        reason = "llama.cpp loaded it but it generated nothing"
    if reason:
        ModelRecord.objects.filter(pk=model.pk).update(status=ModelRecord.Status.FAILED, failure_reason=reason)
        return False
    ModelRecord.objects.filter(pk=model.pk).update(status=ModelRecord.Status.READY, failure_reason="")
    return True


# Perplexity ----------------------------------------------------------------


def student_perplexity(*, model: ModelRecord, texts: list[str], n_ctx: int = 512) -> dict:
    """Token-weighted perplexity of a local model on texts, through llama.cpp.

    See generation/training/perplexity.py for exactly what is counted. Returns
    {"perplexity", "tokens", "nll", "texts", "method", "model"}; a remote model
    (no logits over the API) raises TrainingError.
    """
    from llama_cpp import Llama

    from generation.training.perplexity import llama_perplexity

    config = model_backend_config(model=model)
    if not config.model_path:
        raise TrainingError(f"model {model.name!r} is remote; perplexity needs its weights")
    llm = Llama(model_path=config.model_path, lora_path=config.lora_path or None, logits_all=True, n_ctx=n_ctx,
                n_threads=settings.OUROBOROS["LLAMA_THREADS"], seed=0, verbose=False)
    try:
        result = llama_perplexity(llm, texts).as_dict()
    finally:
        llm.close()
    return {**result, "model": model.provenance()}
