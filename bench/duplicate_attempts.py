"""The near-duplicate attempts on STS-B (issue 15.1), measured again, and what the token-level ones cost.

    .venv/bin/python -m bench.duplicate_attempts [--file ../shared/data/stsb_dev.jsonl]

For each attempt: 5-fold cross-validated ROC-AUC / PR-AUC / Brier of a
logistic regression (`signals.combiner`, folds as `fit_flags` makes them) over
the pair features (`signals.features.duplicate_row`) plus the attempt's own:

* BERTScore-style greedy alignment (Zhang et al. 2020, arXiv:1904.09675) of
  MiniLM's contextual token embeddings (`output_value="token_embeddings"`):
  precision, recall, F1, with all word pieces, content pieces only, or IDF
  weights (IDF from the file's own texts: optimistic);
  the weakest aligned piece and the number below 0.6;
* other poolings of the same forward pass: the mean of hidden layers 3–5,
  max pooling, the CLS vector;
* word order: bigram Jaccard (the LCS ratio ships as `token_order`);
* a non-linear combiner: gradient-boosted stumps in numpy (no scikit-learn in
  the environment), and a logistic regression over u·v and |u−v|.

Cost: the token-level features need a second forward pass per candidate pair
(flagging stores only the pooled vector), the shipped ones none. The last line
is one JSON object; its `ratio` is the seconds per pair of the token-level
features (the pass plus the alignment) over the shipped features', in the same
run. No attempt is the default model: none reaches 0.95 (see README "Flagging").
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

BASE = ("cosine", "cosine_sq", "cosine_cube", "word_jaccard", "containment", "length_ratio", "shingle_jaccard",
        "number_mismatch", "name_mismatch", "unshared_words")


def _stumps_fit(X, y, *, rounds=200, rate=0.1, bins=16, min_leaf=5):
    import numpy as np

    f0 = float(np.log(y.mean() / (1 - y.mean())))
    F = np.full(len(y), f0)
    cuts = [np.unique(np.quantile(X[:, j], np.linspace(0, 1, bins + 1)[1:-1])) for j in range(X.shape[1])]
    trees = []
    for _ in range(rounds):
        p = 1 / (1 + np.exp(-F))
        g, h = y - p, p * (1 - p)
        best = None
        for j in range(X.shape[1]):
            for c in cuts[j]:
                left = X[:, j] <= c
                if left.sum() < min_leaf or (~left).sum() < min_leaf:
                    continue
                gl, hl, gr, hr = g[left].sum(), h[left].sum(), g[~left].sum(), h[~left].sum()
                gain = gl * gl / (hl + 1) + gr * gr / (hr + 1)
                if best is None or gain > best[0]:
                    best = (gain, j, c, rate * gl / (hl + 1), rate * gr / (hr + 1))
        _, j, c, vl, vr = best
        trees.append((j, c, vl, vr))
        F += np.where(X[:, j] <= c, vl, vr)
    return f0, trees


def _stumps_predict(model, X):
    import numpy as np

    f0, trees = model
    F = np.full(len(X), f0)
    for j, c, vl, vr in trees:
        F += np.where(X[:, j] <= c, vl, vr)
    return 1 / (1 + np.exp(-F))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/stsb_dev.jsonl")
    args = parser.parse_args()

    import django

    django.setup()
    import numpy as np
    import torch

    from curation import detector_metrics as metrics
    from curation import embedder, lexical
    from curation.evaluation import load_duplicates
    from curation.signals import combiner, features

    items = load_duplicates(args.file)
    y = np.array([i.label for i in items])
    groups = list(range(len(items)))
    texts = list(dict.fromkeys([i.a for i in items] + [i.b for i in items]))
    at = {t: n for n, t in enumerate(texts)}
    model = embedder.model()
    tokenizer = model.tokenizer
    embedder.embed(texts[:8])

    # The shipped features: the pooled vectors flagging already has, then pure Python.
    vectors = embedder.embed(texts)
    started = time.perf_counter()
    rows = [features.duplicate_row(i.a, i.b, cosine=float(vectors[at[i.a]] @ vectors[at[i.b]])) for i in items]
    shipped_s = (time.perf_counter() - started) / len(items)

    # The token-level features: a second pass for both texts of every pair, then the alignment.
    started = time.perf_counter()
    pair_texts = [t for i in items for t in (i.a, i.b)]
    tokens = model.encode(pair_texts, batch_size=64, output_value="token_embeddings", convert_to_numpy=False,
                          show_progress_bar=False)
    token_of = {t: e.numpy() for t, e in zip(pair_texts, tokens)}
    ids = {t: tokenizer(t, truncation=True, max_length=256)["input_ids"] for t in texts}
    frequency = Counter(i for t in texts for i in set(ids[t]))
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}

    def weights(text, mode):
        out = []
        for i in ids[text]:
            piece = tokenizer.convert_ids_to_tokens(i)
            if i in special or not any(c.isalnum() for c in piece):
                out.append(0.0)
            elif mode == "idf":
                out.append(float(np.log((len(texts) + 1) / (frequency[i] + 1))))
            elif mode == "content":
                out.append(0.0 if piece in lexical.STOPWORDS else 1.0)
            else:
                out.append(1.0)
        return np.array(out)

    for item, row in zip(items, rows):
        ea, eb = token_of[item.a], token_of[item.b]
        ea = ea / np.linalg.norm(ea, axis=1, keepdims=True)
        eb = eb / np.linalg.norm(eb, axis=1, keepdims=True)
        sim = ea @ eb.T
        best_a, best_b = sim.max(1), sim.max(0)
        for mode in ("all", "content", "idf"):
            wa, wb = weights(item.a, mode), weights(item.b, mode)
            recall = float((best_a * wa).sum() / wa.sum()) if wa.sum() else 1.0
            precision = float((best_b * wb).sum() / wb.sum()) if wb.sum() else 1.0
            row[f"bs_f_{mode}"] = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
            row[f"bs_min_{mode}"], row[f"bs_max_{mode}"] = min(recall, precision), max(recall, precision)
            kept = [v for v, w in zip(best_a, wa) if w > 0] + [v for v, w in zip(best_b, wb) if w > 0]
            row[f"weakest_{mode}"] = float(min(kept)) if kept else 1.0
            row[f"below_{mode}"] = float(np.log1p(sum(v < 0.6 for v in kept)))
        row["maxpool"] = float(ea[1:-1].max(0) @ eb[1:-1].max(0) / np.linalg.norm(ea[1:-1].max(0))
                               / np.linalg.norm(eb[1:-1].max(0)))
        row["cls"] = float(ea[0] @ eb[0])
    token_s = (time.perf_counter() - started) / len(items) + shipped_s

    # Hidden layers, mean-pooled (one more pass: the experiment's, not a cost flagging would pay).
    hf = model[0].auto_model
    layers = {}
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = texts[start : start + 64]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = hf(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            for t, n in zip(batch, range(len(batch))):
                layers[t] = [((h[n] * mask[n]).sum(0) / mask[n].sum()).numpy() for h in hidden]
    for item, row in zip(items, rows):
        for layer in (3, 4, 5):
            u, v = layers[item.a][layer], layers[item.b][layer]
            row[f"layer{layer}"] = float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
        ta, tb = lexical.tokens(item.a), lexical.tokens(item.b)
        ba = {(ta[k], ta[k + 1]) for k in range(len(ta) - 1)}
        bb = {(tb[k], tb[k + 1]) for k in range(len(tb) - 1)}
        row["bigram_jaccard"] = len(ba & bb) / len(ba | bb) if ba | bb else 1.0

    def figures(p):
        return {"roc_auc": round(metrics.roc_auc(y, p), 4), "pr_auc": round(metrics.pr_auc(y, p), 4),
                "brier": round(float(np.mean((p - y) ** 2)), 4)}

    def lr(names, l2=1.0):
        X = np.array([[r[f] for f in names] for r in rows])
        return figures(combiner.cross_validated(X, y, groups, features=tuple(names), k=5, l2=l2))

    def stumps(names):
        X = np.array([[r[f] for f in names] for r in rows])
        p = np.zeros(len(y))
        for test in combiner.grouped_folds(groups, 5):
            train = np.setdiff1d(np.arange(len(y)), test)
            p[test] = _stumps_predict(_stumps_fit(X[train], y[train]), X[test])
        return figures(p)

    attempts = {
        "cosine alone": figures(np.array([r["cosine"] for r in rows])),
        "LR, the 10 pair features (detector 3.0)": lr(BASE),
    }
    for extra in (("bs_f_all",), ("bs_f_content",), ("bs_f_idf",), ("bs_f_idf", "bs_min_idf", "bs_max_idf"),
                  ("weakest_content", "below_content"), ("weakest_idf", "below_idf"), ("layer3",), ("layer4",),
                  ("layer5",), ("maxpool",), ("cls",), ("token_order",), ("bigram_jaccard",), ("token_order", "words")):
        attempts["+ " + ", ".join(extra)] = lr(BASE + extra)
    best = BASE + ("bs_f_all", "token_order", "layer5", "maxpool")
    attempts["+ bs_f_all, token_order, layer5, maxpool (L2 3)"] = lr(best, l2=3.0)
    attempts["boosted stumps (200 × depth 1), the 10 features"] = stumps(BASE)
    attempts["boosted stumps, + bs_f_all, token_order, layer5"] = stumps(BASE + ("bs_f_all", "token_order", "layer5"))
    U = np.array([vectors[at[i.a]] for i in items])
    V = np.array([vectors[at[i.b]] for i in items])
    X = np.c_[np.array([[r[f] for f in BASE] for r in rows]), U * V, np.abs(U - V)]
    attempts["LR + u·v, |u−v| (778 features, L2 300)"] = figures(
        combiner.cross_validated(X, y, groups, features=tuple(f"f{n}" for n in range(X.shape[1])), k=5, l2=300.0))
    for name, figs in attempts.items():
        print(f"{name:<55} ROC-AUC {figs['roc_auc']:.4f}  PR-AUC {figs['pr_auc']:.4f}  Brier {figs['brier']:.4f}")
    print(json.dumps({"bench": "duplicate_attempts", "file": args.file.name, "pairs": len(items), "attempts": attempts,
                      "shipped_features_ms_per_pair": round(shipped_s * 1000, 3),
                      "token_features_ms_per_pair": round(token_s * 1000, 3),
                      "ratio": round(token_s / shipped_s, 2)}))


if __name__ == "__main__":
    main()
