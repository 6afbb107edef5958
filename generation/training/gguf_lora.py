"""Write a peft LoRA as a llama.cpp LoRA adapter (GGUF), with the `gguf` package.

Why an adapter and not a merged model: the base stays the Q4_1 file from the
wheel, untouched, so the student runs on exactly the base's kernels (llama.cpp
adds the two thin LoRA matmuls: ~0.94x of the base's speed measured in
PARTS.md). Merging would mean dequantizing, adding and requantizing every
attention matrix each generation: a small delta drowns in Q4_1's rounding
(16 levels per block of 32), and writing the merged matrices wider instead
(Q8_0/F16) would make every generation's file ~100 MB and slower than the
base. An adapter is ~3.7 MB at r=16 and exact.

What llama.cpp expects (llama-adapter.cpp), and how peft's tensors map to it:
- metadata `general.architecture` (the base's, checked against the model),
  `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`
  (llama.cpp scales by alpha / r, as peft does);
- for each adapted matrix `blk.N.attn_q.weight`, tensors `blk.N.attn_q.weight.lora_a`
  and `...lora_b`. GGUF lists dimensions innermost first, so peft's A (r x in)
  and B (out x r) are written as they are: ggml sees A as [in, r] and B as [r, out];
- llama.cpp's HF converter permutes the rows of Q and K for its RoPE layout
  (pairs (0, d/2), (1, d/2 + 1)... become adjacent). The GGUF base carries that
  permutation, so the delta B @ A must carry it too: permuting the rows of B is
  enough, since P (B A) = (P B) A. Without it the adapter loads fine and
  silently scrambles attention (tests/generation/test_training_gguf.py checks
  llama.cpp's logits against peft's).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PEFT_KEY = re.compile(r"(?:.*\.)?layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|o_proj)\.lora_([AB])\.weight$")
GGUF_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}


def rope_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives Q (heads = n_head) and K (heads = n_head_kv)."""
    out = rows.shape[0]
    return rows.reshape(heads, 2, out // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def write_lora_gguf(*, state_dict: dict, path: Path, alpha: float, n_head: int, n_head_kv: int,
                    architecture: str = "llama", name: str = "") -> int:
    """Write the adapter to `path`; returns how many matrices it adapts.

    `state_dict` is peft's adapter state dict (numpy or torch tensors). Tensors
    are written as F32: at r=16 the whole adapter is a few MB, and llama.cpp
    then adds exactly what peft trained.
    """
    import gguf

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, tensor in state_dict.items():
        match = PEFT_KEY.match(key)
        if not match:
            raise ValueError(f"adapter tensor {key!r} is not a LoRA on q/k/v/o_proj; cannot write it for llama.cpp")
        layer, module, side = int(match.group(1)), match.group(2), match.group(3)
        array = tensor.detach().cpu().float().numpy() if hasattr(tensor, "detach") else np.asarray(tensor, np.float32)
        pairs.setdefault((layer, module), {})[side] = array
    writer = gguf.GGUFWriter(str(path), arch=architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    if name:
        writer.add_name(name)
    for (layer, module), sides in sorted(pairs.items()):
        if set(sides) != {"A", "B"}:
            raise ValueError(f"layer {layer} {module} has lora_{''.join(sides)} only; an adapter needs A and B")
        a, b = sides["A"], sides["B"]
        if module == "q_proj":
            b = rope_permute(b, n_head)
        elif module == "k_proj":
            b = rope_permute(b, n_head_kv)
        base = f"blk.{layer}.{GGUF_NAME[module]}.weight"
        writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)
