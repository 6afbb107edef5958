"""Perplexity of a GGUF student on plain texts, through llama.cpp (no transformers).

How it is computed (what the held-out metric means):
- each text is tokenized by the model's own tokenizer, with the BOS token the
  model's metadata asks for and no chat template: it measures how well the
  student models real prose, as in Shumailov et al. (Nature 2024);
- a text longer than the context is scored in consecutive windows of n_ctx
  tokens, each evaluated from an empty cache; the first token of each window
  has no prediction and is not counted;
- every other token adds -log p(token | the tokens before it in its window);
- perplexity = exp(total negative log-likelihood / total scored tokens), so a
  long text weighs more than a short one (token-weighted, not a mean of
  per-text perplexities). Each text's own (nll, tokens) is kept in `per_text`,
  in the order given, so a reader can resample the texts (a bootstrap
  interval over the held-out passages, bench/recursion.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    tokens: int
    nll: float
    texts: int
    per_text: tuple[tuple[float, int], ...] = ()  # (nll, scored tokens) of each text, in order

    def as_dict(self) -> dict:
        return {"perplexity": self.perplexity, "tokens": self.tokens, "nll": self.nll, "texts": self.texts,
                "per_text": [[nll, tokens] for nll, tokens in self.per_text],
                "method": "llama.cpp, plain text with BOS, windows of n_ctx, token-weighted"}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    return logits - peak - np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))


def window_nll(logits: np.ndarray, tokens: list[int]) -> float:
    """Sum of -log p(tokens[i+1]) under logits[i] (rows: positions, columns: vocabulary)."""
    if len(tokens) < 2:
        return 0.0
    logp = _log_softmax(np.asarray(logits[: len(tokens) - 1], dtype=np.float64))
    return float(-logp[np.arange(len(tokens) - 1), tokens[1:]].sum())


def llama_perplexity(llm, texts: list[str]) -> Perplexity:
    """Token-weighted perplexity of an open `llama_cpp.Llama` built with logits_all=True."""
    n_ctx = llm.n_ctx()
    per_text = []
    for text in texts:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        text_nll, text_tokens = 0.0, 0
        for start in range(0, len(tokens), n_ctx):
            window = tokens[start : start + n_ctx]
            if len(window) < 2:
                continue
            llm.reset()
            llm.eval(window)
            text_nll += window_nll(llm.scores[: len(window)], window)
            text_tokens += len(window) - 1
        per_text.append((text_nll, text_tokens))
    total_nll = sum(nll for nll, _ in per_text)
    total_tokens = sum(tokens for _, tokens in per_text)
    if not total_tokens:
        raise ValueError("no text has two tokens or more: nothing to measure perplexity on")
    return Perplexity(perplexity=math.exp(total_nll / total_tokens), tokens=total_tokens, nll=total_nll,
                      texts=len(texts), per_text=tuple(per_text))
