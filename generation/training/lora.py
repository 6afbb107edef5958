"""LoRA fine-tuning of the student with transformers + peft, in resumable steps.

No database here. The caller (generation/services/training.py) decides when to
checkpoint, reports progress and checks for cancellation between steps.

Determinism, so that a resumed run is the run that was interrupted:
- the LoRA's initial weights come from `torch.manual_seed(seed)`;
- step k's batch is a pure function of (seed, k): epoch e = k // steps_per_epoch
  shuffles the examples with `Random(f"{seed}/{e}")`;
- step k seeds torch again (for dropout) from (seed, k);
- a checkpoint holds the adapter weights, the optimizer state and the step.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .data import IGNORE, Example

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LATEST = "latest.json"


class ModelLoadError(RuntimeError):
    """The student cannot be loaded for training; the message says which file and why."""


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of one training run. Stored with the run and the model it makes."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    max_tokens: int = 256
    epochs: int = 1
    max_steps: int = 0  # 0: as many steps as the epochs take
    checkpoint_every: int = 10
    seed: int = 0
    target_modules: tuple[str, ...] = field(default=TARGET_MODULES)

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        """A config from user-supplied params; a ValueError names the bad key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values = {}
        for name, value in params.items():
            if name == "target_modules":
                if not isinstance(value, (list, tuple)) or not value or not all(m in TARGET_MODULES for m in value):
                    raise ValueError(f"target_modules must be a non-empty list of {', '.join(TARGET_MODULES)}")
                values[name] = tuple(value)
                continue
            kind = float if known[name].type in ("float", float) else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ValueError(f"training parameter {name} must be a number ({kind.__name__}), not {value!r}")
            values[name] = kind(value)
        config = cls(**values)
        limits = {
            "lora_r": (1, 256), "lora_alpha": (1, 1024), "batch_size": (1, 256), "max_tokens": (16, 8192),
            "epochs": (1, 100), "max_steps": (0, 1_000_000), "checkpoint_every": (1, 100_000),
            "seed": (0, 2**63 - 1),
        }
        for name, (low, high) in limits.items():
            if not low <= getattr(config, name) <= high:
                raise ValueError(f"training parameter {name} must be between {low} and {high}, not {getattr(config, name)}")
        if not 0 <= config.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), not {config.lora_dropout}")
        if not 0 < config.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), not {config.learning_rate}")
        return config

    def as_params(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def load_student(*, gguf_path: Path, adapter_dir: Path | None, config: TrainConfig, device: str):
    """The student as a trainable peft model, and its tokenizer.

    transformers dequantizes the GGUF to fp32. A student that is itself a LoRA
    (an earlier generation's) is continued: its adapter is loaded trainable on
    top of the same base, so each generation fine-tunes the one before it.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"the student's GGUF file {gguf_path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds; all mean "cannot train this file"
        raise ModelLoadError(f"transformers cannot load {gguf_path.name} for training: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelLoadError(f"{gguf_path.name} has no chat template; the chat export cannot be rendered for it")
    torch.manual_seed(config.seed)
    try:
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
            ))
    except Exception as exc:
        raise ModelLoadError(f"peft cannot put a LoRA on {gguf_path.name}: {exc}") from exc
    return model.to(device), tokenizer


@dataclass(frozen=True)
class StepResult:
    step: int  # steps done after this one
    loss: float
    tokens: int  # tokens the step read (prompt and answer, no padding)
    seconds: float


class LoraTrainer:
    """Runs the steps of one run; `state_save`/`state_load` make it resumable."""

    def __init__(self, *, model, tokenizer, examples: list[Example], config: TrainConfig, device: str = "cpu"):
        import torch

        if not examples:
            raise ValueError("nothing to train on: no example has an assistant token")
        self.model, self.tokenizer, self.examples, self.config, self.device = model, tokenizer, examples, config, device
        self.steps_per_epoch = math.ceil(len(examples) / config.batch_size)
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.step = 0
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def batch_indices(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = list(range(len(self.examples)))
        random.Random(f"{self.config.seed}/{epoch}").shuffle(order)
        size = self.config.batch_size
        return order[offset * size : (offset + 1) * size]

    def _collate(self, batch: list[Example]):
        import torch

        width = max(len(e.input_ids) for e in batch)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        return ids.to(self.device), labels.to(self.device), mask.to(self.device)

    def train_step(self) -> StepResult:
        import torch

        started = time.monotonic()
        batch = [self.examples[i] for i in self.batch_indices(self.step)]
        ids, labels, mask = self._collate(batch)
        torch.manual_seed((self.config.seed * 1_000_003 + self.step) % 2**31)
        self.model.train()
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(step=self.step, loss=float(loss.detach()), tokens=int(mask.sum()),
                          seconds=time.monotonic() - started)

    # Checkpoints ---------------------------------------------------------

    def state_save(self, folder: Path) -> Path:
        """Write a checkpoint for the current step, then point `latest.json` at it.

        The pointer is replaced atomically after the checkpoint is complete, so a
        kill at any moment leaves the previous checkpoint or the new one, never
        half of one. Older checkpoints go once the pointer has moved.
        """
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"step-{self.step:06d}"
        partial = folder / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        save_file(weights, partial / "adapter.safetensors")
        torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
        (partial / "state.json").write_text(json.dumps({"step": self.step, "config": self.config.as_params()}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
        pointer = folder / f".{LATEST}.tmp"
        pointer.write_text(json.dumps({"step": self.step, "folder": target.name}))
        os.replace(pointer, folder / LATEST)
        for old in folder.glob("step-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def state_load(self, folder: Path) -> bool:
        """Continue from the checkpoint `latest.json` names; False when there is none."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        pointer = folder / LATEST
        if not pointer.is_file():
            return False
        latest = json.loads(pointer.read_text())
        checkpoint = folder / latest["folder"]
        set_peft_model_state_dict(self.model, load_file(checkpoint / "adapter.safetensors", device=str(self.device)))
        self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=self.device))
        self.step = int(latest["step"])
        return True

    def adapter_save(self, folder: Path) -> None:
        """The trained adapter in peft's own format (what the next generation continues from)."""
        self.model.save_pretrained(str(folder))


def checkpoint_step(folder: Path) -> int:
    """The step of the latest checkpoint in the folder (0 when there is none)."""
    pointer = Path(folder) / LATEST
    return int(json.loads(pointer.read_text())["step"]) if pointer.is_file() else 0
