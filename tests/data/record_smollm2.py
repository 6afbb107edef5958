"""Record real outputs of the embedded SmolLM2-135M for the validators' tests.

    DJANGO_SETTINGS_MODULE=ouroboros.settings .venv/bin/python tests/data/record_smollm2.py [N_PASSAGES]

Runs the dialogue (constrained decoding, today's prompts) over the demo
passages and writes every completion, kept or refused, to
tests/data/smollm2_outputs.json with what the validators said at recording
time. The file is this project's own model output (SmolLM2 is Apache-2.0).
Recorded once; tests/generation/test_validators.py reads it and checks the
labels written by hand in it (`expect`), not what the code said.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import django

OUT = Path(__file__).with_name("smollm2_outputs.json")


def main() -> None:
    django.setup()
    from generation.backends import get_backend
    from generation.dialogue import DEFAULT_PROMPTS, InvalidOutput, run_dialogue
    from tests.factories import demo_passages

    backend = get_backend("llama_cpp")
    records: list[dict] = []

    class Recording:
        name, model = backend.name, backend.model

        def generate(self, messages, params):
            completion = backend.generate(messages, params)
            user = messages[-1]["content"]
            kind = "answer" if "\n\nQuestion: " in user else "question"
            records.append({"kind": kind, "seed": params.seed, "finish_reason": completion.finish_reason,
                            "text": completion.text,
                            "question": user.split("\n\nQuestion: ", 1)[1] if kind == "answer" else ""})
            print(kind, repr(completion.text)[:160], flush=True)
            return completion

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    passages = demo_passages()[:count]
    for i, passage in enumerate(passages):
        start = len(records)
        try:
            run_dialogue(backend=Recording(), passage_text=passage["text"], answers=2, temperature=0.7,
                         seed=7000 + i, prompts=DEFAULT_PROMPTS)
        except InvalidOutput:
            pass
        for record in records[start:]:
            record["passage"] = i
        OUT.write_text(json.dumps({"model": backend.model, "records": records}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
