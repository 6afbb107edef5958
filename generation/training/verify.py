"""Load a GGUF (and a LoRA adapter on it) in llama.cpp and generate once, in a process of its own.

    python -m generation.training.verify MODEL.gguf [ADAPTER.gguf]

Prints one JSON line, {"text": ..., "completion_tokens": ...}. Run as a child
process by `model_verify`: a file that makes llama.cpp crash (it can segfault
rather than raise on a bad adapter, and leave its state unusable for the next
model) takes down the child, never the worker, and is recorded as a failure.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    from llama_cpp import Llama

    model, lora = argv[0], (argv[1] if len(argv) > 1 else None)
    # The worker's OUROBOROS_LLAMA_THREADS (model_verify passes it): on a loaded machine a second
    # thread that spins waiting for the first costs far more than it brings.
    threads = max(1, int(os.environ.get("OUROBOROS_LLAMA_THREADS") or 2))
    llm = Llama(model_path=model, lora_path=lora, n_ctx=512, n_threads=threads, verbose=False)
    try:
        result = llm.create_chat_completion(
            messages=[{"role": "user", "content": "Say hello in one short sentence."}],
            temperature=0.0, max_tokens=16, seed=0)
    finally:
        llm.close()
    usage = result.get("usage") or {}
    print(json.dumps({"text": result["choices"][0]["message"].get("content") or "",
                      "completion_tokens": int(usage.get("completion_tokens", 0))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
