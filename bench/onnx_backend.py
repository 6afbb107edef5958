"""Is an ONNX Runtime backend (fp32 or dynamic int8) worth offering for the embedder?

    pip install --target /tmp/onnxpkgs onnxruntime==1.31.1 onnx   # not project dependencies
    PYTHONPATH=/tmp/onnxpkgs .venv/bin/python -m bench.onnx_backend [--texts 1000]

Exports the torch all-MiniLM-L6-v2 to ONNX (torch.onnx, opset 17), quantizes a
copy to dynamic int8, and embeds the same sentences with torch (the service's
`encode`), ONNX fp32 and ONNX int8, each with 2 threads, batch 64, mean pooling
and normalisation as sentence-transformers does. Reports sentences/s, the
speedup over torch and the largest |cosine difference| between each backend's
and torch's vectors over all pairs of (text, reference text). The issue's bar:
offer a backend only if it is faster and agrees within 0.01.

Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()

    import django

    django.setup()
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from curation import embedder
    from curation.similarity import split_sentences
    from tests.factories import demo_passages

    sentences = [s for p in demo_passages() for s in split_sentences(p["text"])]
    texts = [f"{s} ({i // len(sentences)})" if i >= len(sentences) else s for i, s in
             enumerate((sentences * (args.texts // len(sentences) + 1))[: args.texts])]
    model = embedder.model()
    transformer = model[0].auto_model.eval()
    tokenizer = model.tokenizer

    tmp = Path(tempfile.mkdtemp())
    fp32, int8 = tmp / "model.onnx", tmp / "model-int8.onnx"
    sample = tokenizer(["hello world"], return_tensors="pt")

    class Wrapped(torch.nn.Module):
        """Keyword arguments in a fixed order: BertModel.forward's positions differ between versions."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    torch.onnx.export(
        Wrapped(transformer), (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]), str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={name: {0: "batch", 1: "tokens"} for name in
                      ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
        opset_version=17, dynamo=False,
    )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)

    def onnx_encode(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(batch: list[str]) -> np.ndarray:
            out = []
            for i in range(0, len(batch), 64):
                enc = tokenizer(batch[i : i + 64], padding=True, truncation=True, max_length=256, return_tensors="np")
                hidden = session.run(None, {k: enc[k].astype(np.int64) for k in
                                            ("input_ids", "attention_mask", "token_type_ids")})[0]
                mask = enc["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
                out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
            return np.concatenate(out)

        return encode

    def timed(encode) -> tuple[np.ndarray, float]:
        encode(texts[:64])  # warm-up
        started = time.perf_counter()
        vectors = encode(texts)
        return vectors, len(texts) / (time.perf_counter() - started)

    reference, torch_rate = timed(lambda batch: embedder.encode(batch, batch_size=64))
    anchors = reference[:: max(1, len(texts) // 100)]
    result = {"bench": "onnx_backend", "texts": len(texts), "torch_per_s": round(torch_rate, 1)}
    for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8)):
        vectors, rate = timed(onnx_encode(path))
        drift = np.abs(vectors @ anchors.T - reference @ anchors.T).max()
        self_drift = np.abs(1.0 - np.sum(vectors * reference, axis=1)).max()
        result.update({f"{name}_per_s": round(rate, 1), f"{name}_speedup": round(rate / torch_rate, 2),
                       f"{name}_max_cosine_diff": round(float(drift), 4),
                       f"{name}_max_1_minus_cos_to_torch": round(float(self_drift), 4)})
    result["adopt"] = [n for n in ("onnx_fp32", "onnx_int8")
                       if result[f"{n}_speedup"] > 1.05 and result[f"{n}_max_cosine_diff"] <= 0.01]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
