"""Language-model signals: how much a source (or an alternative answer) makes each sentence likelier.

The pure part works on arrays: token log-probabilities from logit rows, and
per-sentence statistics of two such runs. `LMScorer` is the only part that
holds a model (the embedded SmolLM2 GGUF, run by llama.cpp).

**PMI grounding.** For answer sentence sᵢ after the answer's earlier sentences
s₍<ᵢ₎: PMI = mean log p(sᵢ | source, s₍<ᵢ₎) − mean log p(sᵢ | s₍<ᵢ₎), per token.
A source that states the sentence's facts makes its tokens likelier; an
invented detail gets no lift (van der Poel et al. 2022, "Mutual Information
Alleviates Hallucinations in Abstractive Summarization"). Reading sᵢ after the
earlier sentences also de-contextualises it: "He" is read knowing who he is.

**LM consistency** (SelfCheckGPT's likelihood flavour, Manakul et al. 2023): the
same lift given each of the student's alternative answers instead of the source,
averaged over the alternatives.

Cost: one model pass per prefix over prefix + answer, and logits are copied
only for the answer's rows: the source is read once for all the sentences.
"""
from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

import numpy as np

# What precedes the answer. The same header in both runs, so the PMI measures the source alone.
SOURCE_HEADER = "Source:\n"
ANSWER_HEADER = "\n\nText:\n"


def token_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax(logits[i])[targets[i]] for every row i: the log-probability of each next token."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"need logits (n, vocab) and n targets, got {logits.shape} and {targets.shape}")
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return logits[np.arange(len(targets)), targets] - log_z


@dataclass(frozen=True)
class SentenceLM:
    """One sentence's language-model signals (nats per token)."""

    pmi: float  # mean log p(s | source, context) − mean log p(s | context)
    logprob: float  # mean log p(s | source, context)
    min_pmi: float  # mean of the 3 tokens the source helps least (one invented word shows here)
    consistency: float | None  # mean over alternatives of the same lift given the alternative; None without any


def sentence_lm(with_source: np.ndarray, without: np.ndarray, with_alternatives: list[np.ndarray]) -> SentenceLM:
    """Signals of one sentence from its token log-probs with the source, without it, and after each alternative."""
    with_source, without = np.asarray(with_source, dtype=np.float64), np.asarray(without, dtype=np.float64)
    if with_source.shape != without.shape or with_source.ndim != 1:
        raise ValueError(f"token log-probs must be two equal 1-d arrays, got {with_source.shape} and {without.shape}")
    if len(with_source) == 0:
        return SentenceLM(0.0, 0.0, 0.0, None)
    lift = with_source - without
    worst = np.sort(lift)[: min(3, len(lift))]
    consistency = None
    if with_alternatives:
        consistency = float(np.mean([np.mean(np.asarray(a, dtype=np.float64) - without) for a in with_alternatives]))
    return SentenceLM(float(lift.mean()), float(with_source.mean()), float(worst.mean()), consistency)


class LMScorer:
    """Token log-probabilities of an answer's sentences after a prefix, with the embedded llama.cpp model.

    One per process (`scorer()`); llama.cpp contexts are not thread-safe, hence the lock.
    """

    def __init__(self, model_path: str, *, n_ctx: int = 1024, n_threads: int = 2) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_batch=512,
                            logits_all=True, verbose=False)
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self._bos = self._llama.token_bos()
        # Free the model before interpreter teardown; llama.cpp's own finaliser fails that late.
        atexit.register(self._llama.close)

    def tokens(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def head(self, text: str, limit: int) -> str:
        """The text cut to its first `limit` tokens: sources come best first, so the end is what goes."""
        tokens = self.tokens(text)
        if len(tokens) <= limit:
            return text
        return self._llama.detokenize(tokens[: max(0, limit)]).decode("utf-8", errors="ignore")

    def continuation_logprobs(self, prefix: str, sentences: list[str]) -> list[np.ndarray]:
        """Each sentence's token log-probs, read after `prefix` and the sentences before it, in one pass.

        The prefix is cut from the left when prefix + answer would not fit the
        context (the answer is never cut). Logits are kept for the answer's rows
        only: the prefix costs one forward pass and no copies.
        """
        pieces = [self.tokens(("" if i == 0 else " ") + s) for i, s in enumerate(sentences)]
        answer = [t for p in pieces for t in p]
        if not answer:
            return [np.zeros(0) for _ in sentences]
        room = self.n_ctx - len(answer) - 1
        if room < 2:
            raise ValueError(f"the answer ({len(answer)} tokens) does not fit the {self.n_ctx}-token context")
        head = self.tokens(prefix)
        head = [self._bos] + head[max(0, len(head) - room + 1):]
        llama = self._llama
        with self._lock:
            llama.reset()
            llama._logits_all = False  # the prefix's rows are never read: do not copy them
            try:
                llama.eval(head[:-1])
            finally:
                llama._logits_all = True
            llama.eval(head[-1:] + answer)
            start = len(head) - 1  # the row of the prefix's last token predicts the answer's first
            rows = llama.scores[start : start + len(answer)]
            logprobs = token_logprobs(rows, np.asarray(answer))
        out, at = [], 0
        for piece in pieces:
            out.append(logprobs[at : at + len(piece)])
            at += len(piece)
        return out

    def answer_signals(self, *, source: str, sentences: list[str], alternatives: list[str]) -> list[SentenceLM]:
        """PMI grounding (and LM consistency when there are alternatives) for every sentence of an answer."""
        if not sentences:
            return []
        answer_tokens = sum(len(self.tokens(" " + s)) for s in sentences)
        room = self.n_ctx - answer_tokens - 16
        with_source = self.continuation_logprobs(SOURCE_HEADER + self.head(source, room) + ANSWER_HEADER, sentences)
        without = self.continuation_logprobs(SOURCE_HEADER + ANSWER_HEADER, sentences)
        per_alt = [self.continuation_logprobs(SOURCE_HEADER + self.head(alt, room) + ANSWER_HEADER, sentences)
                   for alt in alternatives if alt.strip()]
        return [sentence_lm(with_source[i], without[i], [alt[i] for alt in per_alt]) for i in range(len(sentences))]


_scorer: LMScorer | None = None
_scorer_lock = threading.Lock()


def scorer() -> LMScorer:
    """The process's one scorer, loaded on first use beside the embedder (about 0.5 s, ~250 MB)."""
    global _scorer
    with _scorer_lock:
        if _scorer is None:
            from django.conf import settings

            from ouroboros.embedded import smollm2_gguf as smollm2_path

            _scorer = LMScorer(str(smollm2_path()), n_threads=settings.OUROBOROS["LLAMA_THREADS"])
        return _scorer
