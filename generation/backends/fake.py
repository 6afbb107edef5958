"""A deterministic backend for tests that are about something other than the model.

It answers from the prompt itself, so the same messages and seed always give
the same text, and the text is plausible enough to pass output validation.
"""
from __future__ import annotations

import hashlib
import os
import time

from .base import BackendConfig, Completion, GenerationParams, Message


class FakeBackend:
    name = "fake"
    model = "fake-echo-1"

    def __init__(self, config: BackendConfig | None = None) -> None:
        # Tests of jobs under load or faults slow it down to look like a real model.
        self.latency_s = float(os.environ.get("OUROBOROS_FAKE_LATENCY_MS", "0")) / 1000

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        if self.latency_s:
            time.sleep(self.latency_s)
        user = messages[-1]["content"]
        digest = hashlib.sha256(f"{params.seed}|{user}".encode()).hexdigest()
        words = [w for w in (w.strip(".,;:()?!\"'") for w in user.split()) if len(w) > 5 and w.lower() != "passage"][:40]
        pick = int(digest[:8], 16)
        topic = words[pick % len(words)] if words else "this"
        if "Question:" not in user:  # the tutor's turn: ask something
            text = f"What role does {topic.lower()} play in the passage? ({digest[:6]})"
        else:
            detail = words[(pick // 7) % len(words)] if words else "detail"
            # States a fact without talking about "the passage": the validators refuse answers that do.
            text = f"{topic.capitalize()} is linked to {detail.lower()}, and each one shapes the other. Reference {digest[:6]}."
        return Completion(
            text=text,
            model=self.model,
            finish_reason="stop",
            prompt_tokens=sum(len(m["content"].split()) for m in messages),
            completion_tokens=len(text.split()),
            latency_ms=0,
        )
