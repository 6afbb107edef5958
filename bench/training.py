"""Training throughput of the built-in trainer: tokens/s of LoRA steps through the whole path
(Celery task on the `training` queue → checkpointed chunks → registered model) against the same
steps run by the trainer directly in this process.

    python -m ouroboros.stack bench bench.training [--steps 8 --batch 4 --tokens 256]

1. A training set: the demo corpus's passages as accepted answers (long enough to fill
   256-token sequences), built and published with its exports.
2. Baseline: the student loaded in this process, the same examples and config, `--steps`
   steps timed one by one (loading excluded).
3. Full path: a real worker on the `training` queue trains a run with the same config; its
   tokens/s is what the run reports (steps only, loading excluded), and the wall time from
   queuing to a registered model (loading, checkpoints, the GGUF adapter, llama.cpp's check)
   is printed beside it.
Tokens counted: every token of a batch's sequences (prompt and answer, no padding).
Prints one JSON line last: both rates and their ratio (goal ≥ 0.9).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import django

    django.setup()
    import torch
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from curation.models import Sample, TrainingSet
    from curation.services.exports import export_run
    from curation.services.lineages import lineage_create, passages_add
    from curation.services.training_sets import training_set_build
    from generation.backends.llama_cpp import smollm2_path
    from generation.models import TrainingRun
    from generation.services.training import training_run_create
    from generation.training.data import examples_from_chat, read_chat_jsonl
    from generation.training.lora import LoraTrainer, TrainConfig, load_student
    from tests.factories import demo_passages
    from tests.support.processes import CeleryProcess, wait_for

    stamp = time.strftime("%Y%m%d-%H%M%S")
    user, _ = get_user_model().objects.get_or_create(username="bench-trainer")
    lineage = lineage_create(name=f"bench training {stamp}", slug=f"bench-training-{stamp}")
    passages = demo_passages()
    passages_add(lineage=lineage, passages=passages)
    generation = lineage.generations.get(status="open")
    for passage in lineage.passages.all():
        Sample.objects.create(lineage=lineage, generation=generation, passage=passage, item_index=0,
                              question=f"Tell me about {passage.title or 'this'}.", answer=passage.text,
                              status=Sample.Status.ACCEPTED)
    training_set = training_set_build(lineage=lineage, built_by=user, seed=1)
    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED, training_set.status
    params = {"max_steps": args.steps, "batch_size": args.batch, "max_tokens": args.tokens,
              "checkpoint_every": max(2, args.steps // 2), "seed": 1}
    config = TrainConfig.from_params(params)

    # 2. Baseline: the trainer alone.
    torch.set_num_threads(settings.OUROBOROS["TRAINING_THREADS"])
    started = time.monotonic()
    model, tokenizer = load_student(gguf_path=smollm2_path(), adapter_dir=None, config=config, device="cpu")
    load_seconds = time.monotonic() - started
    chat = Path(settings.EXPORT_ROOT) / training_set.exports.get(format="chat").path
    examples = examples_from_chat(tokenizer, read_chat_jsonl(chat), max_tokens=config.max_tokens)
    trainer = LoraTrainer(model=model, tokenizer=tokenizer, examples=examples, config=config)
    tokens = seconds = 0.0
    for _ in range(args.steps):
        result = trainer.train_step()
        tokens += result.tokens
        seconds += result.seconds
    direct = tokens / seconds
    print(f"direct: {tokens:.0f} tokens in {seconds:.1f} s = {direct:.1f} tokens/s (load {load_seconds:.1f} s)",
          file=sys.stderr)
    del trainer, model
    gc.collect()

    # 3. Full path: a real worker.
    with tempfile.TemporaryDirectory() as tmp:
        worker = CeleryProcess.worker("bench-trainer", Path(tmp), queues="training")
        try:
            queued = time.monotonic()
            run = training_run_create(training_set=training_set, created_by=user, params=params)
            wait_for(lambda: not TrainingRun.objects.get(pk=run.pk).is_active, timeout=3600,
                     what="the training run", processes=[worker], interval=1)
            wall = time.monotonic() - queued
        finally:
            worker.stop()
    run = TrainingRun.objects.select_related("output_model").get(pk=run.pk)
    if run.status != TrainingRun.Status.DONE:
        print(f"run {run.pk} ended {run.status}: {run.error}", file=sys.stderr)
        return 1
    through_task = run.tokens_per_s
    print(json.dumps({
        "bench": "training", "steps": args.steps, "batch": args.batch, "max_tokens": args.tokens,
        "examples": len(examples), "threads": settings.OUROBOROS["TRAINING_THREADS"],
        "direct_tokens_per_s": round(direct, 1), "task_tokens_per_s": round(through_task, 1),
        "ratio": round(through_task / direct, 3), "task_wall_seconds": round(wall, 1),
        "load_seconds_direct": round(load_seconds, 1), "adapter_bytes": Path(run.output_model.path).stat().st_size,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
