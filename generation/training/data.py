"""Training examples from a training set's chat-messages export.

No database and no Django here: a JSONL file in, token ids and labels out.
The labels mask everything but the assistant's turns (their text and the end
of turn token that lets the model stop), so the loss is on what the student is
meant to say, never on the prompt or the chat template's headers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

IGNORE = -100  # the label torch's cross-entropy leaves out
ROLES = {"system", "user", "assistant"}


class TrainingDataError(ValueError):
    """A training file that cannot be trained on; the message names the file, the line and the cause."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def read_chat_jsonl(path: Path) -> list[list[dict]]:
    """The conversations of a chat-messages JSONL file, each checked for shape."""
    conversations = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise TrainingDataError(f"cannot read the chat export {path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{where} is not JSON: {exc.msg}") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise TrainingDataError(f"{where} has no 'messages' list")
            for message in messages:
                if (not isinstance(message, dict) or message.get("role") not in ROLES
                        or not isinstance(message.get("content"), str)):
                    raise TrainingDataError(f"{where}: every message needs a role ({', '.join(sorted(ROLES))}) "
                                            "and a string content")
            if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
                raise TrainingDataError(f"{where} has no assistant turn to learn from")
            conversations.append(messages)
    return conversations


def _assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss is taken on.

    Rendering each prefix of the conversation with the model's own chat template
    and diffing consecutive renderings finds each assistant turn without knowing
    the template: the span runs from the turn's content to the end of what the
    turn added (its end of turn marker), minus trailing whitespace.
    """
    rendered = [""]
    for end in range(1, len(messages) + 1):
        rendered.append(tokenizer.apply_chat_template(messages[:end], tokenize=False))
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, after = rendered[index], rendered[index + 1]
        if not after.startswith(before):
            raise TrainingDataError("the chat template renders a conversation differently from its prefix; "
                                    "cannot find the assistant's tokens")
        start = after.find(message["content"], len(before))
        if start < 0:
            raise TrainingDataError("the chat template changed an assistant message; cannot find its tokens")
        spans.append((start, len(after.rstrip())))
    return rendered[-1], spans


def tokenize_conversation(tokenizer, messages: list[dict], *, max_tokens: int) -> Example:
    """Token ids of the rendered conversation, labels only on assistant tokens, cut to max_tokens."""
    text, spans = _assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_tokens]
    labels = []
    for token_id, (start, end) in zip(ids, encoded["offset_mapping"]):
        inside = any(start >= s and end <= e and end > start for s, e in spans)
        labels.append(token_id if inside else IGNORE)
    return Example(input_ids=ids, labels=labels)


def examples_from_chat(tokenizer, conversations: list[list[dict]], *, max_tokens: int) -> list[Example]:
    """Every conversation that keeps at least one assistant token after the cut."""
    examples = [tokenize_conversation(tokenizer, messages, max_tokens=max_tokens) for messages in conversations]
    return [example for example in examples if example.target_tokens]
