"""The JSON schemas each turn is asked for, and reading a field back.

The patterns are written for llama.cpp's JSON-schema-to-grammar converter:
anchored, character classes only ("[.]" rather than an escaped dot, which
its grammar syntax refuses) and no counted repeats of large ranges (each
count becomes a copy of the rule). Quotes and backslashes are left out of
the classes so that no JSON escape can appear inside a turn.
"""
from __future__ import annotations

import json

# One question: a capital letter, no line break, no second question mark, ending in "?".
QUESTION = {
    "type": "object",
    "properties": {"question": {"type": "string", "pattern": '^[A-Z][^?\\n"\\\\]+[?]$'}},
    "required": ["question"],
    "additionalProperties": False,
}

# Two or three declarative sentences: no "?" or "!" anywhere, each sentence ends in ".".
ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "pattern": '^[A-Z][^.?!\\n"\\\\]+[.]( [A-Z][^.?!\\n"\\\\]+[.]){1,2}$'},
    },
    "required": ["answer"],
    "additionalProperties": False,
}


def field_of(text: str, key: str) -> str | None:
    """The string `key` of a JSON object reply, or None when the reply is not one (plain text)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
