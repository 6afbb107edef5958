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
same lift given the student's alternative answers instead of the source, read
together as one prefix (one answer read, not one per alternative).

Cost: one model pass per prefix over prefix + answer, and logits are copied
only for the answer's rows: the source is read once for all the sentences.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# What precedes the answer. The same header in both runs, so the PMI measures the source alone.
SOURCE_HEADER = "Source:\n"
ANSWER_HEADER = "\n\nText:\n"
# Between the alternatives in their one prefix.
ALTERNATIVES_SEPARATOR = "\n\n"


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
    consistency: float | None  # the same lift given the alternatives (mean over the runs given); None without any


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

    One per process (`scorer()`), holding one llama.cpp context for its life;
    llama.cpp contexts are not thread-safe, hence the lock. The context's KV
    cache holds sequences of two kinds:

    * **cached prefixes**, one llama.cpp sequence each: a prefix's evaluated
      state (all but its last token) stays in the cache, least recently used
      out first. A new prefix that starts like a cached one (the same source
      passage first, `detectors.lm_source`) copies the shared part, which costs
      no compute, and evaluates only the rest. The alternatives repeat across a
      question's answers, and the no-source prefix across every answer.
    * **the answer's rows**: every prefix's last token and the answer, all the
      prefixes of one call in ONE decode, logits requested for those rows
      only; then removed, leaving the prefixes as they were.

    Results are also kept per (prefix, answer): a re-flag of the same sample
    (a detector bump) costs no model pass, nor does the no-source baseline of
    an answer scored before.
    """

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int = 1, n_ubatch: int = 64,
                 window: int = 1024, prefix_slots: int = 48, results: int = 4096) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel
        from llama_cpp._utils import suppress_stdout_stderr

        if window > n_ctx:
            raise ValueError(f"the reading window ({window} tokens) is larger than the context ({n_ctx})")
        self._lib = llama_cpp
        self._model = LlamaModel(path_model=model_path, params=llama_cpp.llama_model_default_params(), verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = n_ubatch
        params.n_seq_max = prefix_slots
        params.kv_unified = True  # one cell pool: a copied prefix shares its cells, and slots share the room
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs the context's layout to stderr
            self._ctx = LlamaContext(model=self._model, params=params, verbose=False)
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.n_ctx, self.window, self.n_threads = n_ctx, window, n_threads
        self._n_vocab = self._model.n_vocab()
        self._bos = self._model.token_bos()
        self._slots: OrderedDict[tuple[int, ...], int] = OrderedDict()  # cached prefix (all but its last token) -> seq
        self._free = list(range(prefix_slots))
        self.slots = prefix_slots
        self._results: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._results_size = results
        self.stats = {"calls": 0, "evaluated_tokens": 0, "reused_tokens": 0, "result_hits": 0}
        self._lock = threading.Lock()
        # Free the context and model before interpreter teardown; llama.cpp's own finalisers fail that late.
        atexit.register(self.close)

    def close(self) -> None:
        with self._lock:
            if self._batch is not None:
                self._lib.llama_batch_free(self._batch)
                self._batch = None
            self._ctx.close()
            self._model.close()

    def tokens(self, text: str) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def head(self, text: str, limit: int) -> str:
        """The text cut to its first `limit` tokens: sources come best first, so the end is what goes."""
        tokens = self.tokens(text)
        if len(tokens) <= limit:
            return text
        return self._model.detokenize(tokens[: max(0, limit)]).decode("utf-8", errors="ignore")

    def continuation_logprobs(self, prefix: str, sentences: list[str]) -> list[np.ndarray]:
        """Each sentence's token log-probs, read after `prefix` and the sentences before it."""
        return self.logprobs_after([prefix], sentences)[0]

    def logprobs_after(self, prefixes: list[str], sentences: list[str]) -> list[list[np.ndarray]]:
        """For every prefix, each sentence's token log-probs read after it and the sentences before it.

        A prefix is cut from the left when prefix + answer would not fit the
        reading window (the answer is never cut).
        """
        pieces = [self.tokens(("" if i == 0 else " ") + s) for i, s in enumerate(sentences)]
        answer = [t for p in pieces for t in p]
        if not answer:
            return [[np.zeros(0) for _ in sentences] for _ in prefixes]
        room = self.window - len(answer) - 1
        if room < 2:
            raise ValueError(f"the answer ({len(answer)} tokens) does not fit the {self.window}-token window")
        heads = []
        for prefix in prefixes:
            head = self.tokens(prefix)
            heads.append(tuple([self._bos] + head[max(0, len(head) - room + 1):]))
        with self._lock:
            runs = self._answer_logprobs(heads, tuple(answer))
        out = []
        for logprobs in runs:
            split, at = [], 0
            for piece in pieces:
                split.append(logprobs[at : at + len(piece)])
                at += len(piece)
            out.append(split)
        return out

    # -------------------------------------------------------------- the llama.cpp side (under the lock)

    def _answer_logprobs(self, heads: list[tuple[int, ...]], answer: tuple[int, ...]) -> list[np.ndarray]:
        found: dict[tuple[int, ...], np.ndarray] = {}
        for head in dict.fromkeys(heads):
            hit = self._results.get(_key(head, answer))
            if hit is not None:
                self._results.move_to_end(_key(head, answer))
                self.stats["result_hits"] += 1
                found[head] = hit
        todo = [h for h in dict.fromkeys(heads) if h not in found]
        # As many prefixes per decode as the context holds: each needs its uncached part and its answer rows.
        group: list[tuple[int, ...]] = []
        for head in todo:
            if group and (self._cells_needed(group + [head], answer) > self.n_ctx or len(group) == self.slots):
                found.update(self._run_or_retry(group, answer))
                group = []
            group.append(head)
        if group:
            found.update(self._run_or_retry(group, answer))
        self.stats["calls"] += 1
        return [found[h] for h in heads]

    def _run_or_retry(self, group: list[tuple[int, ...]], answer: tuple[int, ...]) -> dict:
        try:
            return self._run(group, answer)
        except _NoRoom:
            # The free cells were there but scattered: start from an empty cache (the group alone fits it).
            self._clear()
            return self._run(group, answer)

    def _cells_needed(self, group: list[tuple[int, ...]], answer: tuple[int, ...]) -> int:
        return sum(len(h) - 1 + 1 + len(answer) for h in group)

    def _run(self, group: list[tuple[int, ...]], answer: tuple[int, ...]) -> dict:
        """Decode the group's prefixes (what is not cached) and then all their answer rows, in two decodes."""
        lib, mem = self._lib, self._ctx.memory
        if len(group) > len(self._free) + len(self._slots) or self._cells_needed(group, answer) > self.n_ctx:
            raise ValueError(f"{len(group)} prefixes of {self._cells_needed(group, answer)} tokens do not fit "
                             f"the {self.n_ctx}-token context")
        keep = {h[:-1] for h in group}
        # Make room: the cached prefixes not used here go, oldest first, until the group fits beside the rest.
        self._evict(keep, need_slots=sum(h[:-1] not in self._slots for h in group),
                    need_cells=sum((len(h) - 1 if h[:-1] not in self._slots else 0) + 1 + len(answer) for h in group))
        slot_of, pending = {}, []  # pending: (seq, tokens, first position) of prefixes not yet decoded
        for head in group:
            body = head[:-1]
            if body in self._slots:
                self._slots.move_to_end(body)
                slot_of[head] = self._slots[body]
                self.stats["reused_tokens"] += len(body)
                continue
            seq = self._free.pop()
            # The longest cached prefix this one starts with: copy its cells (no compute), evaluate the rest.
            best, shared = None, 0
            for other, other_seq in self._slots.items():
                n = _common_prefix(other, body)
                if n > shared:
                    best, shared = other_seq, n
            if best is not None:
                if any(s == best for s, _, _ in pending):  # its cells are not there yet: decode what waits first
                    self._decode_runs(pending)
                    pending = []
                lib.llama_memory_seq_cp(mem, best, seq, 0, shared)
            self._slots[body] = seq
            slot_of[head] = seq
            if len(body) > shared:
                pending.append((seq, body[shared:], shared))
            self.stats["reused_tokens"] += shared
        self._decode_runs(pending)
        # One decode for every prefix's last token and the answer; logits only for the rows that predict the answer.
        self._fill([(slot_of[h], (h[-1],) + answer[:-1], len(h) - 1, True) for h in group])
        self._decode()
        out, row = {}, 0
        rows = np.empty((len(answer), self._n_vocab), dtype=np.float32)
        for head in group:
            for j in range(len(answer)):
                rows[j] = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx.ctx, row), shape=(self._n_vocab,))
                row += 1
            logprobs = token_logprobs(rows, np.asarray(answer))
            out[head] = logprobs
            self._remember(_key(head, answer), logprobs)
            # Back to the cached prefix: the answer's rows leave the sequence.
            lib.llama_memory_seq_rm(mem, slot_of[head], len(head) - 1, -1)
        return out

    def _decode_runs(self, runs: list[tuple[int, tuple[int, ...], int]]) -> None:
        if runs:
            self._fill([(seq, tokens, start, False) for seq, tokens, start in runs])
            self._decode()

    def _fill(self, runs: list[tuple[int, tuple[int, ...], int, bool]]) -> None:
        """Put (sequence, tokens, first position, logits wanted) runs into the batch."""
        batch, n = self._batch, 0
        for seq, tokens, start, logits in runs:
            for i, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = logits
                n += 1
        batch.n_tokens = n
        self.stats["evaluated_tokens"] += n

    def _decode(self) -> None:
        code = self._lib.llama_decode(self._ctx.ctx, self._batch)
        if code == 1:  # no free run of cells for a micro-batch
            raise _NoRoom()
        if code != 0:
            self._clear()
            raise RuntimeError(f"llama_decode returned {code}")

    def _evict(self, keep: set, *, need_slots: int, need_cells: int) -> None:
        def used() -> int:
            return sum(len(body) for body in self._slots)  # an upper bound: copied prefixes share cells

        while self._slots and (len(self._free) < need_slots or used() + need_cells > self.n_ctx):
            victim = next((b for b in self._slots if b not in keep), None)
            if victim is None:
                break
            seq = self._slots.pop(victim)
            self._lib.llama_memory_seq_rm(self._ctx.memory, seq, -1, -1)
            self._free.append(seq)

    def _clear(self) -> None:
        self._lib.llama_memory_clear(self._ctx.memory, True)
        self._free.extend(self._slots.values())
        self._slots.clear()

    def _remember(self, key: tuple, logprobs: np.ndarray) -> None:
        self._results[key] = logprobs
        while len(self._results) > self._results_size:
            self._results.popitem(last=False)

    def answer_signals(self, *, source: str, sentences: list[str], alternatives: list[str]) -> list[SentenceLM]:
        """PMI grounding (and LM consistency when there are alternatives) for every sentence of an answer.

        Three prefixes: the source, none, and the alternatives together (one
        after another, in their order). Reading the answer once after all of
        them, not once after each, costs one answer's tokens instead of one per
        alternative; the lift then says how much the student's other answers,
        taken together, make the sentence likelier. The three answer runs share
        one decode.
        """
        if not sentences:
            return []
        answer_tokens = sum(len(self.tokens(" " + s)) for s in sentences)
        room = self.window - answer_tokens - 16
        prefixes = [SOURCE_HEADER + self.head(source, room) + ANSWER_HEADER, SOURCE_HEADER + ANSWER_HEADER]
        alternatives = [a.strip() for a in alternatives if a and a.strip()]
        if alternatives:
            prefixes.append(SOURCE_HEADER + self.head(ALTERNATIVES_SEPARATOR.join(alternatives), room) + ANSWER_HEADER)
        with_source, without, *per_alt = self.logprobs_after(prefixes, sentences)
        return [sentence_lm(with_source[i], without[i], [alt[i] for alt in per_alt]) for i in range(len(sentences))]


def _key(head: tuple[int, ...], answer: tuple[int, ...]) -> bytes:
    """A result's key: a digest, so that thousands of kept results do not keep their token lists."""
    return hashlib.blake2b(np.asarray(head + (-1,) + answer, dtype=np.int32).tobytes(), digest_size=16).digest()


class _NoRoom(RuntimeError):
    """llama_decode found no room in the KV cache for the batch."""


def _common_prefix(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


_scorer: LMScorer | None = None
_scorer_lock = threading.Lock()


def scorer() -> LMScorer:
    """The process's one scorer and its one llama.cpp context, loaded on first use beside the embedder.

    About 0.5 s and ~320 MB (the 270 MB F16 copy of the model, a 2048-token KV cache of 47 MB); the
    first load in a checkout also derives that copy (about 1 s, `ouroboros.embedded`).
    """
    global _scorer
    with _scorer_lock:
        if _scorer is None:
            from django.conf import settings

            from ouroboros import embedded

            try:
                path = embedded.smollm2_scoring_gguf()
            except OSError as exc:  # no writable model cache: the shipped Q4_1 file scores too, ~1.6x slower
                logger.warning("LM scorer: no F16 copy of the model (%s); scoring with %s", exc, embedded.GGUF_NAME)
                path = embedded.smollm2_gguf()
            _scorer = LMScorer(str(path), n_threads=settings.OUROBOROS["LM_THREADS"])
        return _scorer
