"""The JSON schemas each turn is asked for, and reading a field back.

The patterns are written for llama.cpp's JSON-schema-to-grammar converter:
anchored, character classes only ("[.]" rather than an escaped dot, which
its grammar syntax refuses) and no counted repeats of large ranges (each
count becomes a copy of the rule). Quotes and backslashes are left out of
the classes so that no JSON escape can appear inside a turn.
"""
from __future__ import annotations

import json

# Words a question opens with. Constraining the first word matters: left to
# start with any capital letter, the 135M model often copies the passage into
# the question field until it runs out of tokens (4 of 11 recorded questions).
INTERROGATIVES = ("What", "Why", "How", "Which", "Where", "When", "Who", "Whose", "In what", "Is", "Are", "Does",
                  "Do", "Did", "Can", "Could", "Would", "If")

# One question: an interrogative word, no line break, no second question mark, ending in "?".
QUESTION = {
    "type": "object",
    "properties": {"question": {"type": "string",
                                "pattern": "^(" + "|".join(INTERROGATIVES) + ') [^?\\n"\\\\]+[?]$'}},
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
