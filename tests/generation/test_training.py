"""The built-in trainer in one process: its data, its refusals, its checkpoints, and the adapter llama.cpp serves.

The real-worker tests (a worker trains; a worker SIGKILLed mid-run is resumed) are in
test_training_worker.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.backends.llama_cpp import smollm2_path
from generation.models import ModelRecord, TrainingRun, base_model_record
from generation.services import training as svc
from generation.training.data import IGNORE, examples_from_chat, tokenize_conversation
from generation.training.gguf_lora import write_lora_gguf
from generation.training.lora import TrainConfig, checkpoint_step, load_student
from generation.training.perplexity import llama_perplexity, window_nll
from tests.factories import make_lineage, make_sample
from tests.generation.training_support import TINY, published_set


@pytest.fixture(autouse=True)
def model_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"
    # One thread for torch and llama.cpp: on the shared 2-core machine a second one mostly spins
    # waiting for the first (the in-process run took 249 s with two).
    settings.OUROBOROS = {**settings.OUROBOROS, "MODEL_ROOT": str(tmp_path / "models"), "TRAINING_THREADS": 1,
                          "LLAMA_THREADS": 1}
    yield
    svc._session_drop()


@pytest.fixture(scope="module")
def student():
    """The embedded student in transformers with a fresh LoRA (loading takes ~25-45 s: once per module)."""
    import torch

    torch.set_num_threads(2)
    return load_student(gguf_path=smollm2_path(), adapter_dir=None,
                        config=TrainConfig(lora_dropout=0.0, target_modules=("q_proj", "k_proj")), device="cpu")


# Data --------------------------------------------------------------------


def test_the_loss_is_taken_on_the_assistants_tokens_and_its_end_of_turn_only(student):
    _, tokenizer = student
    messages = [{"role": "user", "content": "What is ATP?"},
                {"role": "assistant", "content": "It stores <b>energy</b> in cells."}]
    example = tokenize_conversation(tokenizer, messages, max_tokens=512)
    learned = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert learned == "It stores <b>energy</b> in cells.<|im_end|>"
    prompt = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label == IGNORE])
    assert "What is ATP?" in prompt and "assistant" in prompt and "energy" not in prompt


def test_a_conversation_cut_before_its_answer_is_left_out(student):
    _, tokenizer = student
    long_prompt = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short."}]
    short = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    examples = examples_from_chat(tokenizer, [long_prompt, short], max_tokens=64)
    assert len(examples) == 1 and max(len(e.input_ids) for e in examples) <= 64


def test_training_parameters_are_checked_and_named():
    assert TrainConfig.from_params({"lora_r": 8, "learning_rate": 1e-3}).lora_r == 8
    for params, words in [({"lr": 1}, "unknown training parameter(s): lr"),
                          ({"lora_r": 0}, "lora_r must be between 1 and 256"),
                          ({"batch_size": "4"}, "batch_size must be a number"),
                          ({"learning_rate": 2}, "learning_rate must be in (0, 1)"),
                          ({"target_modules": ["mlp"]}, "target_modules must be")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig.from_params(params)


def test_perplexity_counts_every_predicted_token_once():
    # Two positions over a 3-token vocabulary: p(token 2 | pos 0) = 1/2, p(token 0 | pos 1) = 1/4.
    logits = np.log(np.array([[0.25, 0.25, 0.5], [0.25, 0.5, 0.25], [1, 1, 1]]))
    assert math.isclose(window_nll(logits, [1, 2, 0]), -math.log(0.5) - math.log(0.25))
    assert window_nll(logits, [1]) == 0.0


class _ScoresOf:
    """Stands in for llama_cpp.Llama where only the bookkeeping is tested: a token's id is its text's
    length mod 3, and every position predicts a uniform distribution, so each scored token costs ln 3."""

    def __init__(self, n_ctx):
        self._n_ctx, self.scores = n_ctx, np.zeros((n_ctx, 3))

    def n_ctx(self):
        return self._n_ctx

    def tokenize(self, data, add_bos, special):
        return [1] * len(data.split())

    def reset(self):
        pass

    def eval(self, tokens):
        assert len(tokens) <= self._n_ctx


def test_perplexity_keeps_each_texts_nll_and_tokens_in_order():
    # 5 words, 2 words, 1 word, in windows of 4: 4+1 tokens -> 3 scored (the 1-token window scores none), 1, 0.
    result = llama_perplexity(_ScoresOf(n_ctx=4), ["a b c d e", "f g", "h"])
    assert [tokens for _, tokens in result.per_text] == [3, 1, 0]
    assert [nll for nll, _ in result.per_text] == pytest.approx([3 * math.log(3), math.log(3), 0.0])
    assert (result.tokens, result.nll) == (4, pytest.approx(4 * math.log(3)))
    assert result.perplexity == pytest.approx(3.0)
    assert result.as_dict()["per_text"] == [list(pair) for pair in result.per_text]


# Refusals ----------------------------------------------------------------


def test_a_set_that_is_not_published_or_too_small_is_refused_and_nothing_is_written(
        reviewer, curator, settings, django_capture_on_commit_callbacks):
    lineage = make_lineage()
    for i in range(2):
        sample_accept(sample=make_sample(lineage), reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        unpublished = training_set_build(lineage=lineage, built_by=curator, seed=1)
    with pytest.raises(svc.TrainingError, match=f"training set {unpublished.pk} is not published yet"):
        svc.training_run_create(training_set=unpublished)
    published = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    settings.OUROBOROS = {**settings.OUROBOROS, "TRAINING_MIN_RECORDS": 500}
    with pytest.raises(svc.TrainingError, match=rf"has {published.record_count} records; training needs at least 500"):
        svc.training_run_create(training_set=published)
    assert not TrainingRun.objects.exists()


def test_a_student_it_cannot_train_is_refused_with_the_cause(reviewer, curator, django_capture_on_commit_callbacks):
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    remote = ModelRecord.objects.create(kind=ModelRecord.Kind.REMOTE, name="vllm-llama", base_url="http://127.0.0.1:9/v1",
                                        remote_model="llama", status=ModelRecord.Status.READY)
    with pytest.raises(svc.TrainingError, match="is a remote endpoint; the built-in trainer fine-tunes local GGUF"):
        svc.training_run_create(training_set=training_set, base_model=remote)
    broken = ModelRecord.objects.create(kind=ModelRecord.Kind.MERGED_GGUF, name="gone", path="/nonexistent.gguf",
                                        status=ModelRecord.Status.FAILED, failure_reason="llama.cpp could not load it")
    with pytest.raises(svc.TrainingError, match="is failed, not ready: llama.cpp could not load it"):
        svc.training_run_create(training_set=training_set, base_model=broken)
    with pytest.raises(svc.TrainingError, match="lora_r must be between"):
        svc.training_run_create(training_set=training_set, params={"lora_r": 100000})
    assert not TrainingRun.objects.exists()


def test_a_gguf_transformers_cannot_load_fails_the_run_with_the_reason(
        reviewer, curator, tmp_path, django_capture_on_commit_callbacks):
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    model = ModelRecord.objects.create(kind=ModelRecord.Kind.MERGED_GGUF, name="junk", path=str(junk),
                                       status=ModelRecord.Status.READY)
    with django_capture_on_commit_callbacks(execute=False):
        run = svc.training_run_create(training_set=training_set, base_model=model, params=TINY)
    svc.training_run_chunk(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "transformers cannot load junk.gguf for training" in run.error


# Runs in chunks ----------------------------------------------------------


def test_a_run_trains_in_checkpointed_chunks_and_registers_a_model_llama_cpp_has_run(
        reviewer, curator, django_capture_on_commit_callbacks):
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        run = svc.training_run_create(training_set=training_set, created_by=curator, params=TINY)
    assert len(queued) == 1 and run.base_model == base_model_record() and run.status == TrainingRun.Status.QUEUED

    with django_capture_on_commit_callbacks(execute=False) as queued:
        outcome = svc.training_run_chunk(run_id=run.pk)
    run.refresh_from_db()
    assert (outcome.steps, outcome.finished, len(queued)) == (2, False, 1)  # one chunk, the next one queued
    assert (run.step, run.total_steps, run.status) == (2, 4, TrainingRun.Status.RUNNING)
    assert run.loss > 0 and run.tokens_per_s > 0 and run.eta_seconds is not None and run.claim_token is None
    assert checkpoint_step(Path(run.checkpoint_path)) == 2
    assert svc.training_run_chunk(run_id=run.pk).claimed is True  # the same process goes on from memory

    run.refresh_from_db()
    model = run.output_model
    assert run.status == TrainingRun.Status.DONE and run.step == 4
    assert model.status == ModelRecord.Status.READY and model.kind == ModelRecord.Kind.LORA_ADAPTER
    assert model.parent == run.base_model and model.training_set == training_set and model.lineage == run.lineage
    assert model.sha256 == svc.sha256_of(Path(model.path)) and model.params["lora_r"] == 16
    assert Path(model.params["peft_adapter"], "adapter_config.json").is_file()
    assert model.metrics["steps"] == 4 and model.metrics["tokens_per_s"] > 0
    assert not Path(run.checkpoint_path).exists()  # the adapter holds it all now
    assert svc.training_run_chunk(run_id=run.pk).claimed is False  # a finished run is never trained again

    texts = ["Zorblat zorblat! Item 9 is about zorblats, and zorblats are everything."]
    base = svc.student_perplexity(model=base_model_record(), texts=texts)
    trained = svc.student_perplexity(model=model, texts=texts)
    assert trained["tokens"] == base["tokens"] > 10
    assert trained["perplexity"] < base["perplexity"]  # it learned the style it was shown


def test_a_cancelled_run_is_not_claimed_again(reviewer, curator, django_capture_on_commit_callbacks):
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        run = svc.training_run_create(training_set=training_set, params=TINY)
    assert svc.training_run_cancel(run=run) is True
    assert svc.training_run_cancel(run=run) is False
    assert svc.training_run_chunk(run_id=run.pk).claimed is False
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.CANCELLED


# Serving: the adapter in llama.cpp ----------------------------------------


def test_llama_cpp_applies_the_written_adapter_as_peft_does(student, tmp_path):
    """A random LoRA on Q and K: llama.cpp's change to the logits must match peft's.

    Q and K are the matrices llama.cpp's converter permutes; written without the
    permutation the adapter still loads, but the change it makes goes astray.
    """
    import torch
    from llama_cpp import Llama
    from peft import get_peft_model_state_dict

    import generation.training.gguf_lora as gguf_lora

    model, tokenizer = student
    generator = torch.Generator().manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    text = "The mitochondrion makes ATP by oxidative phosphorylation, and the cell spends it."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    model.eval()
    with torch.no_grad():
        peft_logits = model(input_ids=torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            base_logits = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    state = get_peft_model_state_dict(model)

    def llama_logits(lora: Path | None) -> np.ndarray:
        llm = Llama(model_path=str(smollm2_path()), lora_path=str(lora) if lora else None, logits_all=True,
                    n_ctx=256, n_threads=2, verbose=False)
        try:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
            llm.eval(ids)
            return np.array(llm.scores[: len(ids)])
        finally:
            llm.close()

    def write(path: Path) -> Path:
        write_lora_gguf(state_dict=state, path=path, alpha=32, n_head=model.config.num_attention_heads,
                        n_head_kv=model.config.num_key_value_heads)
        return path

    right = llama_logits(write(tmp_path / "right.gguf"))
    base = llama_logits(None)
    original = gguf_lora.rope_permute
    gguf_lora.rope_permute = lambda rows, heads: rows
    try:
        unpermuted = llama_logits(write(tmp_path / "unpermuted.gguf"))
    finally:
        gguf_lora.rope_permute = original
    # transformers' fp32 arithmetic and llama.cpp's quantized kernels differ a little on the base (max ~1
    # logit); the change the adapter makes is larger than that, so its direction must agree.
    peft_change = (peft_logits - base_logits).ravel()
    agree = np.corrcoef(peft_change, (right - base).ravel())[0, 1]
    astray = np.corrcoef(peft_change, (unpermuted - base).ravel())[0, 1]
    assert np.abs(peft_change).max() > 2.0  # the adapter changes the logits a lot...
    assert agree > 0.6, agree  # ...llama.cpp changes them the same way (0.79 here)...
    assert astray < 0.2, astray  # ...and without the permutation it does not (below 0 here)


def test_a_model_llama_cpp_cannot_load_is_recorded_as_failed_with_the_reason(db, tmp_path):
    broken = tmp_path / "broken-adapter.gguf"
    broken.write_bytes(b"not a gguf file")
    model = ModelRecord.objects.create(kind=ModelRecord.Kind.LORA_ADAPTER, name="broken", path=str(broken),
                                       parent=base_model_record())
    assert svc.model_verify(model=model) is False
    model.refresh_from_db()
    assert model.status == ModelRecord.Status.FAILED
    assert model.failure_reason.startswith("llama.cpp could not load or run it (")
    assert svc.model_verify(model=base_model_record()) is True


# Pages and API -------------------------------------------------------------


def test_progress_shows_on_the_lineage_page_and_in_the_api_and_both_cancel(
        curator_client, reviewer, curator, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        run = svc.training_run_create(training_set=training_set, params=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(status="running", step=3, total_steps=8, loss=1.25,
                                                 tokens_per_s=190.0, eta_seconds=95, error="<script>x</script>")
    lineage_page = curator_client.get(reverse("lineage-detail", args=[run.lineage.slug])).content.decode()
    assert f'hx-get="{reverse("lineage-training", args=[run.lineage.slug])}"' in lineage_page
    section = curator_client.get(reverse("lineage-training", args=[run.lineage.slug]), HTTP_HX_REQUEST="true")
    html = section.content.decode()
    assert f'id="training-run-{run.pk}"' in html and "step 3 of 8" in html and "190 tokens/s" in html
    assert "ETA 2 min" in html and "loss 1.250" in html
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    api = APIClient()
    api.force_authenticate(curator)
    body = api.get(f"/api/training-runs/{run.pk}/").json()
    assert (body["step"], body["total_steps"], body["loss"], body["tokens_per_s"], body["eta_seconds"]) == \
        (3, 8, 1.25, 190.0, 95)
    assert api.post(f"/api/training-runs/{run.pk}/cancel/").json()["status"] == "cancelled"
    assert api.post(f"/api/training-runs/{run.pk}/cancel/").status_code == 409
    ended = curator_client.get(reverse("training-run-progress", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert ended.status_code == 286  # htmx: stop polling


def test_the_api_starts_a_run_or_says_why_not(reviewer, curator, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    api = APIClient()
    api.force_authenticate(curator)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        created = api.post("/api/training-runs/", {"training_set": training_set.pk, "params": TINY}, format="json")
    assert created.status_code == 201 and created.json()["status"] == "queued" and len(queued) == 1
    refused = api.post("/api/training-runs/", {"training_set": training_set.pk, "params": {"lr": 1}}, format="json")
    assert refused.status_code == 409 and "unknown training parameter(s): lr" in refused.json()["detail"]
    assert api.post("/api/training-runs/", {"training_set": 999999}, format="json").status_code == 404
