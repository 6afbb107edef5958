"""Lexical signals on plain strings: content words, their coverage, and MinHash.

No database and no model here, so everything is unit-tested on literals.

* Coverage is the share of a sentence's content words that a reference also
  contains. Embeddings place "in 1958" and "in 1985" close together; a
  missing number or name is exactly what coverage notices. It is the unigram
  flavour of SelfCheckGPT's n-gram variant (Manakul et al. 2023,
  https://arxiv.org/abs/2303.08896, §5.3), used here against references.
* MinHash (Broder 1997, "On the resemblance and containment of documents")
  estimates the Jaccard similarity of two texts' word shingles from fixed-size
  signatures; banding the signature (locality-sensitive hashing, Leskovec,
  Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3) lets PostgreSQL find
  candidate copies with an indexed array overlap instead of a scan.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

NUM_PERM = 128
BANDS = 32  # 32 bands of 4 rows: a pair with Jaccard 0.6 becomes a candidate with p ≈ 0.99
ROWS = NUM_PERM // BANDS
SHINGLE = 3  # word 3-grams: order matters, so a reshuffled paraphrase is not a copy
_SEED = 1
# Stored signatures are only comparable under one hashing scheme: pin it.
_SCHEME = "affine32"

_TOKEN = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*")
# Function words carry no fact: leaving them out keeps coverage about content.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not of off on once only or other our ours ourselves out over own same she should so some such than that
    the their theirs them themselves then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you your yours yourself yourselves one
    called known usually often many much may might must also there's it's""".split()
)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; numbers keep their decimal point or comma ("1,200", "0.05")."""
    return _TOKEN.findall(text.lower())


def _stem(word: str) -> str:
    """A deliberately crude stemmer: a plural "s" goes, so "chromosomes" covers "chromosome"."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    return [_stem(t) for t in tokens(text) if t not in STOPWORDS]


def _weight(word: str) -> float:
    # A wrong number is the commonest and the most damaging invented detail.
    return 2.0 if any(ch.isdigit() for ch in word) else 1.0


def coverage(sentence_words: list[str] | tuple[str, ...], reference_words: set[str] | frozenset[str]) -> float:
    """Weighted share of the sentence's content words found in the reference (1.0 for a wordless sentence)."""
    if not sentence_words:
        return 1.0
    total = sum(_weight(w) for w in sentence_words)
    found = sum(_weight(w) for w in sentence_words if w in reference_words)
    return found / total


@lru_cache(maxsize=50_000)
def _words(text: str) -> tuple[str, ...]:
    # Flagging scores every sentence of a batch against its passage's chunks and the alternatives:
    # the same few hundred texts over and over, so their words are worth keeping.
    return tuple(content_words(text))


@lru_cache(maxsize=50_000)
def _word_set(text: str) -> frozenset[str]:
    return frozenset(_words(text))


def coverage_matrix(sentences: list[str], references: list[str]) -> np.ndarray:
    """coverage(sentence i, reference j) for every pair, shape (len(sentences), len(references))."""
    sentence_words = [_words(s) for s in sentences]
    reference_sets = [_word_set(r) for r in references]
    out = np.zeros((len(sentences), len(references)), dtype=np.float32)
    for i, words in enumerate(sentence_words):
        for j, ref in enumerate(reference_sets):
            out[i, j] = coverage(words, ref)
    return out


# ----------------------------------------------------------------------------- MinHash


def shingles(text: str) -> set[str]:
    words = tokens(text)
    if len(words) < SHINGLE:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


@lru_cache(maxsize=1)
def _permutations():
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, seed=_SEED, scheme=_SCHEME).permutations


def minhash(text: str) -> list[int]:
    """The text's MinHash signature: NUM_PERM integers below 2**32 (they fit a bigint column)."""
    from datasketch import MinHash

    # Reusing the permutations saves regenerating them for every text.
    signature = MinHash(num_perm=NUM_PERM, seed=_SEED, permutations=_permutations(), scheme=_SCHEME)
    grams = shingles(text)
    if grams:
        signature.update_batch([g.encode("utf-8") for g in grams])
    return [int(v) for v in signature.hashvalues]


def minhash_bands(signature: list[int]) -> list[int]:
    """One signed 64-bit key per band; two texts sharing any key are candidate copies."""
    keys = []
    for band in range(BANDS):
        rows = signature[band * ROWS : (band + 1) * ROWS]
        digest = hashlib.blake2b(f"{band}:{','.join(map(str, rows))}".encode(), digest_size=8).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
    return keys


def minhash_jaccard(a: list[int], b: list[int]) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal positions."""
    if len(a) != len(b) or not a:
        raise ValueError(f"signatures differ in length ({len(a)} vs {len(b)})")
    return float(np.mean(np.asarray(a, dtype=np.int64) == np.asarray(b, dtype=np.int64)))
