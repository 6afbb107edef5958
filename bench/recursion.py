"""The recursion bench: two lineages loop side by side, one curated and one not, and the
student's held-out perplexity and the data's diversity are measured every generation.

    python -m ouroboros.stack bench bench.recursion --generations G --items N [--seed S] [--seeds K]
        [--answers 2] [--generation-workers 2] [--top-ups 2] [--figures bench/figures]

Both arms start from the same corpus (the demo's 24 passages) and the same seed, with the
embedded SmolLM2 as tutor and first student, loop mode `train` (each generation's student
is the LoRA the built-in trainer made from the last generation's set, continued), and real
Celery workers for the `generation`, `curation` and `training` queues:

- *uncurated*: policy replace, minimum real fraction 0, auto review `accept-all` (the system
  reviewer accepts every sample, flagged or not): the student trains on its own last output;
- *curated*: policy accumulate, minimum real fraction 0.2, auto review by the flags (a
  flagged sample is rejected): every earlier accepted sample plus fresh real passages.

Both arms run at once, each in its own thread calling `loop_run` one generation at a time, on
the same workers (two generation processes, one curation, one training): the machine's load
falls on both alike, and one arm's training overlaps the other's generating. A step's seconds
are therefore wall time that includes waiting for the other arm's task on a shared worker. The jobs of generation g get the
same seed in both arms (llama.cpp keeps its evaluated context between calls, so the two arms'
generation 1 is not byte-identical even so). Two bench settings, where the issue is silent:
- a generation whose every sample was flagged would end the curated arm (the builder refuses a
  generation with no accepted sample), so it gets N more items, another job in the same
  generation (`--top-ups` times at most; the row's `extra_items` counts them);
- OUROBOROS_TRAINING_MIN_RECORDS defaults to 1 here (the app's default is 4), so that a curated
  set of one accepted sample and one real passage is trained on rather than refused.

After each step the bench reads what the loop stored: the held-out perplexity of each student
(generation g's row: the student that wrote generation g; the last student, trained on set G,
is row G+1 with no data), the generation's metrics (curation/services/metrics.py: distinct-2,
Vendi, coverage on the accepted samples; flag rates over all of them), distinct-2 of every
generated sample (`distinct_2_generated`: the student's output whatever was accepted), the
seconds of each step and the trainer's tokens/s.

The spread of the perplexity: with --seeds K > 1, K replicate pairs of lineages (seeds S ..
S+K-1), and the mean, standard deviation, min and max over them; always, a 95% percentile
bootstrap interval over the held-out passages (each passage's NLL and tokens resampled with
replacement, token-weighted as the perplexity itself), and a paired one for the ratio of the
two arms (the same resampled passages in both).

`python -m bench.recursion --render FIGURES/recursion.json` redraws the chart, the table
(recursion.md) and the summary from a saved run, without services.

Prints one JSON line last; `ratio` is the last student's perplexity, curated ÷ uncurated
(below 1: curation kept the student closer to real text). Writes it to FIGURES/recursion.json
and the chart to FIGURES/recursion.svg after every generation, so a run stopped early leaves
what it measured (`"complete": false`).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

ARMS = {
    "uncurated": {"policy": {"mode": "replace", "min_real_fraction": 0.0}, "review_mode": "accept-all"},
    "curated": {"policy": {"mode": "accumulate", "min_real_fraction": 0.2}, "review_mode": "flags"},
}
COLOURS = {"uncurated": "#c0392b", "curated": "#1f6fb2"}
PHASES = ("generate", "flag", "review", "build", "train", "perplexity")
SEED_STRIDE = 100_003  # the jobs' seed of generation g is seed + (g - 1) * SEED_STRIDE, as run_loop's
BOOTSTRAP_RESAMPLES = 2000
# Publishing a set starts its training run (generation/signals.py) with the trainer's defaults,
# the same in both arms; the bench changes none of them.
TRAINER = ("the trainer's defaults (TrainConfig): LoRA r=16 on q/k/v/o, 1 epoch, AdamW 2e-4, "
           "batches of 4 sequences of at most 256 tokens, continuing the last generation's adapter")


# ------------------------------------------------------------------------------ pure parts (tested)


def pooled_perplexity(per_text) -> float:
    """exp(total NLL / total tokens) over [(nll, tokens), ...]: the held-out perplexity's own formula."""
    tokens = sum(t for _, t in per_text)
    if tokens <= 0:
        raise ValueError("no scored tokens: cannot compute a perplexity")
    return math.exp(sum(n for n, _ in per_text) / tokens)


def _resample_indices(count: int, *, resamples: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def _percentiles(values, level: float) -> list[float]:
    import numpy as np

    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def _pooled_rows(per_text, indices):
    import numpy as np

    nll = np.asarray([n for n, _ in per_text], dtype=float)[indices].sum(axis=1)
    tokens = np.asarray([t for _, t in per_text], dtype=float)[indices].sum(axis=1)
    return np.exp(nll / tokens)


def bootstrap_interval(per_text, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the pooled perplexity, resampling the texts with replacement."""
    if not per_text:
        raise ValueError("no texts to resample")
    indices = _resample_indices(len(per_text), resamples=resamples, seed=seed)
    return _percentiles(_pooled_rows(per_text, indices), level)


def paired_ratio_interval(base, other, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                          level: float = 0.95) -> dict:
    """pooled(other) ÷ pooled(base) and its paired bootstrap interval: the same texts drawn for both.

    `base` and `other` are per-text (nll, tokens) of the same texts in the same order.
    """
    if len(base) != len(other) or not base:
        raise ValueError(f"paired texts differ in number: {len(base)} and {len(other)}")
    indices = _resample_indices(len(base), resamples=resamples, seed=seed)
    ratios = _pooled_rows(other, indices) / _pooled_rows(base, indices)
    return {"ratio": pooled_perplexity(other) / pooled_perplexity(base), "ci95": _percentiles(ratios, level)}


def seeds_spread(values) -> dict | None:
    """Mean, sample standard deviation, min and max of one figure over replicate seeds (None values left out)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)
    sd = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else None
    return {"mean": mean, "sd": sd, "min": min(present), "max": max(present), "n": len(present)}


AVERAGED = ("heldout_perplexity", "distinct_2", "distinct_2_generated", "vendi", "coverage", "hallucination_rate",
            "duplicate_rate", "samples", "accepted", "rejected", "training_records", "training_real_records",
            "training_tokens_per_s", "loop_seconds")


def aggregate(replicates: list[dict]) -> dict:
    """Per arm, per generation: each figure averaged over the replicate seeds, with the perplexity's spread.

    `replicates`: one {arm: [row per generation]} per seed, rows with a `generation` number. With one
    replicate the spread is its bootstrap interval over the held-out passages; with more, the spread
    over the seeds (each seed's bootstrap interval stays in its replicate).
    """
    arms: dict[str, list[dict]] = {}
    for arm in sorted({a for replicate in replicates for a in replicate}):
        numbers = sorted({row["generation"] for replicate in replicates for row in replicate.get(arm, [])})
        rows = []
        for number in numbers:
            found = [row for replicate in replicates for row in replicate.get(arm, []) if row["generation"] == number]
            merged = {"generation": number, "replicates": len(found)}
            for key in AVERAGED:
                spread = seeds_spread([row.get(key) for row in found])
                merged[key] = None if spread is None else round(spread["mean"], 4)
            merged["seconds"] = {phase: round(sum(r["seconds"].get(phase, 0.0) for r in found) / len(found), 1)
                                 for phase in PHASES if any(phase in r.get("seconds", {}) for r in found)}
            if len(found) == 1:
                merged["heldout_perplexity_spread"] = ({"kind": "bootstrap over held-out passages",
                                                        "ci95": found[0].get("heldout_perplexity_ci95")}
                                                       if found[0].get("heldout_perplexity_ci95") else None)
            else:
                spread = seeds_spread([row.get("heldout_perplexity") for row in found])
                merged["heldout_perplexity_spread"] = None if spread is None else {
                    "kind": f"over {spread['n']} seeds", **{k: spread[k] for k in ("sd", "min", "max")}}
            rows.append(merged)
        arms[arm] = rows
    return arms


def _interval(row: dict) -> tuple[float, float] | None:
    spread = row.get("heldout_perplexity_spread") or {}
    if spread.get("ci95"):
        return tuple(spread["ci95"])
    if spread.get("min") is not None:
        return spread["min"], spread["max"]
    return None


def _nice_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _panel(*, x0: float, title: str, series: dict[str, list[tuple[int, float, tuple | None]]],
           generations: list[int], width: float, height: float, top: float) -> list[str]:
    """One chart panel: axes, ticks, a polyline per arm, an error bar per point that has an interval."""
    left, bottom = x0 + 52, top + height
    plot_w = width - 64
    values = [v for points in series.values() for _, v, _ in points]
    values += [b for points in series.values() for _, _, ci in points if ci for b in ci]
    out = [f'<text x="{x0 + width / 2:.1f}" y="{top - 12:.1f}" text-anchor="middle" font-size="13">'
           f'{html.escape(title)}</text>']
    if not values or not generations:
        out.append(f'<text x="{x0 + width / 2:.1f}" y="{top + height / 2:.1f}" text-anchor="middle" '
                   f'font-size="12">no data yet</text>')
        return out
    low, high = _nice_range(values)
    g_low, g_high = min(generations), max(generations)

    def x(g: float) -> float:
        return left + (plot_w * (g - g_low) / (g_high - g_low) if g_high > g_low else plot_w / 2)

    def y(v: float) -> float:
        return bottom - height * (v - low) / (high - low)

    out.append(f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{left + plot_w:.1f}" y2="{bottom:.1f}" stroke="#333"/>')
    out.append(f'<line x1="{left:.1f}" y1="{top:.1f}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="#333"/>')
    for i in range(5):
        v = low + (high - low) * i / 4
        out.append(f'<line x1="{left - 4:.1f}" y1="{y(v):.1f}" x2="{left + plot_w:.1f}" y2="{y(v):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{left - 7:.1f}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{v:.3g}</text>')
    for g in generations:
        out.append(f'<text x="{x(g):.1f}" y="{bottom + 16:.1f}" text-anchor="middle" font-size="11">{g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 32:.1f}" text-anchor="middle" font-size="11">'
               f'generation</text>')
    for arm, points in series.items():
        colour = COLOURS.get(arm, "#555")
        if len(points) > 1:
            path = " ".join(f"{x(g):.1f},{y(v):.1f}" for g, v, _ in points)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for g, v, ci in points:
            if ci:
                out.append(f'<line x1="{x(g):.1f}" y1="{y(ci[0]):.1f}" x2="{x(g):.1f}" y2="{y(ci[1]):.1f}" '
                           f'stroke="{colour}" stroke-opacity="0.6"/>')
            out.append(f'<circle cx="{x(g):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">'
                       f'<title>{html.escape(f"{arm}, generation {g}: {v:.4g}")}</title></circle>')
    return out


def chart_svg(result: dict) -> str:
    """Panels, both arms: the student's held-out perplexity (with its spread) and distinct-2 per generation,
    and, when the run has it, the paired ratio curated ÷ uncurated of the perplexity.

    Plain SVG written here (no plotting library); every piece of text is escaped.
    """
    arms = result.get("arms", {})
    panel_w, panel_h, top = 360, 230, 64
    ppl = {arm: [(r["generation"], r["heldout_perplexity"], _interval(r)) for r in rows
                 if r.get("heldout_perplexity") is not None] for arm, rows in arms.items()}
    d2 = {arm: [(r["generation"], r["distinct_2_generated"], None) for r in rows
                if r.get("distinct_2_generated") is not None] for arm, rows in arms.items()}
    paired = {"curated ÷ uncurated": [(r["generation"], r["ratio"], tuple(r["ci95"]))
                                      for r in result.get("paired_ratio_by_generation") or []]}
    panels = [("student's held-out perplexity (lower is better)", ppl), ("distinct-2 of the generated samples", d2)]
    if paired["curated ÷ uncurated"]:
        panels.append(("held-out perplexity, curated ÷ uncurated (paired)", paired))
    width = 10 + len(panels) * (panel_w + 20)
    generations = sorted({g for _, series in panels for points in series.values() for g, _, _ in points})
    spread = result.get("spread", "")
    caption = (f"bench.recursion: {result.get('generations', '?')} generations of {result.get('items', '?')} items, "
               f"seed {result.get('seed', '?')}" + (f", {result['seeds']} seeds" if result.get("seeds", 1) > 1 else "")
               + ("" if result.get("complete", True) else " (incomplete)"))
    height = top + panel_h + 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="12" y="20" font-size="13" font-weight="bold">{html.escape(caption)}</text>']
    for i, (title, series) in enumerate(panels):
        out += _panel(x0=10 + i * (panel_w + 20), title=title, series=series, generations=generations,
                      width=panel_w, height=panel_h, top=top)
    legend_y = top + panel_h + 62
    for i, arm in enumerate(arms):
        lx = 70 + i * 160
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="14" height="4" fill="{COLOURS.get(arm, "#555")}"/>')
        out.append(f'<text x="{lx + 20}" y="{legend_y - 4}" font-size="12">{html.escape(arm)}</text>')
    if spread:
        note = "bars: " + spread + "; for the ratio, the same passages drawn for both arms"
        out.append(f'<text x="400" y="{legend_y - 4}" font-size="11">{html.escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}"
        return f"{value:.{digits}g}" if abs(value) >= 1 or value == 0 else f"{value:.{digits}f}".rstrip("0")
    return str(value)


def markdown_table(result: dict) -> str:
    """The README's table: a row per arm per generation, from the bench's JSON (pure)."""
    header = ("| arm | gen | held-out perplexity (95% interval) | distinct-2 generated / accepted | Vendi | "
              "coverage | hallucination rate | duplicate rate | samples (accepted) | set records (real) | "
              "train tokens/s | seconds: generate / flag / review / build / train / perplexity |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for arm, rows in result.get("arms", {}).items():
        for row in rows:
            spread = row.get("heldout_perplexity_spread") or {}
            interval = spread.get("ci95") or ([spread["min"], spread["max"]] if spread.get("min") is not None else None)
            ppl = _fmt(row.get("heldout_perplexity"), 4) + (
                f" ({_fmt(interval[0], 4)}–{_fmt(interval[1], 4)})" if interval else "")
            seconds = row.get("seconds") or {}
            timing = " / ".join(_fmt(seconds.get(phase)) for phase in PHASES) if seconds else "–"
            samples = "–" if row.get("samples") is None else f"{_fmt(row['samples'])} ({_fmt(row.get('accepted'))})"
            records = ("–" if row.get("training_records") is None
                       else f"{_fmt(row['training_records'])} ({_fmt(row.get('training_real_records'))})")
            lines.append(f"| {arm} | {row['generation']} | {ppl} | {_fmt(row.get('distinct_2_generated'))} / "
                         f"{_fmt(row.get('distinct_2'))} | {_fmt(row.get('vendi'))} | {_fmt(row.get('coverage'))} | "
                         f"{_fmt(row.get('hallucination_rate'))} | {_fmt(row.get('duplicate_rate'))} | {samples} | "
                         f"{records} | {_fmt(row.get('training_tokens_per_s'))} | {timing} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the run


def _setup_lineage(*, arm: str, seed: int, stamp: str, answers: int):
    from curation.management.commands.seed_demo import DEMO_FILE
    from curation.models import LineagePolicy
    from curation.services.lineages import lineage_create, passages_add
    from generation.models import GeneratorSettings, LoopMode
    from tests.factories import demo_passages

    demo = json.loads(DEMO_FILE.read_text(encoding="utf-8"))["lineage"]
    lineage = lineage_create(name=f"{demo['name']} (recursion {arm} s{seed} {stamp})",
                             slug=f"recursion-{arm}-s{seed}-{stamp}", description=demo["description"])
    passages_add(lineage=lineage, passages=demo_passages())
    GeneratorSettings.objects.filter(lineage=lineage).update(backend="llama_cpp", student_answers=answers,
                                                             loop_mode=LoopMode.TRAIN)
    LineagePolicy.objects.filter(lineage=lineage).update(**ARMS[arm]["policy"])
    lineage.auto_review = True
    lineage.save(update_fields=["auto_review"])
    lineage.refresh_from_db()
    return lineage


def _per_text(generation) -> list | None:
    """The held-out (nll, tokens) per passage of the generation's student, as the loop cached them."""
    from curation.services.heldout import heldout_digest, heldout_texts
    from generation.services.loop import generation_student
    from generation.services.training import student_perplexity

    student = generation_student(generation=generation)
    if student is None:
        return None
    digest = heldout_digest(lineage=generation.lineage)
    cached = ((student.metrics or {}).get("heldout_per_text") or {}).get(digest)
    if cached is None:  # measured before per-passage figures were kept: measure again
        cached = student_perplexity(model=student, texts=heldout_texts(lineage=generation.lineage))["per_text"]
    return [tuple(pair) for pair in cached]


def _generation_row(*, lineage, number: int, report, seed: int) -> dict:
    """What the loop stored for generation `number` of the lineage, read back from the database."""
    from curation import metrics as math_metrics
    from curation.models import Generation, Sample, TrainingSet
    from curation.services.metrics import generation_metrics_compute
    from generation.models import TrainingRun

    generation = Generation.objects.get(lineage=lineage, number=number)
    metrics = generation_metrics_compute(generation=generation, check_gates=False)
    texts = [f"{q}\n{a}" for q, a in Sample.objects.filter(generation=generation).values_list("question", "answer")]
    per_text = _per_text(generation)
    training_set = TrainingSet.objects.filter(generation=generation).first()
    run = (TrainingRun.objects.filter(training_set=training_set).select_related("output_model").first()
           if training_set else None)
    trained = (run.output_model.metrics or {}) if run and run.output_model_id else {}
    tokens = (trained.get("tokens_per_s") or 0) * (trained.get("train_seconds_this_worker") or 0)
    return {
        "generation": number, "student": report.student if report else "",
        "heldout_perplexity": round(pooled_perplexity(per_text), 4) if per_text else None,
        "heldout_perplexity_ci95": [round(v, 4) for v in bootstrap_interval(per_text, seed=seed)] if per_text else None,
        "heldout_per_text": per_text,
        "samples": metrics.generated, "accepted": metrics.accepted, "rejected": metrics.rejected,
        "distinct_2": metrics.distinct_2, "distinct_2_generated": math_metrics.distinct_n(texts, 2),
        "vendi": metrics.vendi, "coverage": metrics.coverage,
        "hallucination_rate": metrics.hallucination_rate, "duplicate_rate": metrics.duplicate_rate,
        "training_records": training_set.record_count if training_set else None,
        "training_real_records": training_set.real_count if training_set else None,
        "training_steps": trained.get("steps"), "training_tokens": round(tokens) if tokens else None,
        "training_tokens_per_s": round(trained["tokens_per_s"], 1) if trained.get("tokens_per_s") else None,
        "final_loss": trained.get("final_loss"),
        "seconds": dict(report.seconds) if report else {},
        "loop_seconds": round(sum(report.seconds.values()), 1) if report else None,
    }


def _student_row(*, lineage, number: int, seed: int) -> dict:
    """The last student (trained on the last set, never generating): its perplexity only."""
    from curation.models import Generation

    per_text = _per_text(Generation.objects.get(lineage=lineage, number=number))
    return {"generation": number, "student_only": True,
            "heldout_perplexity": round(pooled_perplexity(per_text), 4) if per_text else None,
            "heldout_perplexity_ci95": [round(v, 4) for v in bootstrap_interval(per_text, seed=seed)] if per_text else None,
            "heldout_per_text": per_text, "seconds": {}}


def _summary(*, args, replicates: list[dict], stopped: dict, started: float, complete: bool, load: list) -> dict:
    arms = aggregate([{arm: [{k: v for k, v in row.items() if k != "heldout_per_text"} for row in rows]
                       for arm, rows in replicate.items()} for replicate in replicates])
    result = {"bench": "recursion", "generations": args.generations, "items": args.items, "seed": args.seed,
              "seeds": args.seeds, "answers_per_item": args.answers, "trainer": TRAINER,
              "policies": {arm: {**spec["policy"], "auto_review": spec["review_mode"]} for arm, spec in ARMS.items()},
              "spread": ("95% percentile bootstrap over the held-out passages" if args.seeds == 1
                         else f"min to max over {args.seeds} seeds"),
              "complete": complete, "stopped": stopped, "arms": arms}
    # The headline: the last student both arms reached, curated ÷ uncurated, paired over the passages.
    last = {arm: {row["generation"]: row for row in rows} for arm, rows in
            (("uncurated", replicates[0].get("uncurated", [])), ("curated", replicates[0].get("curated", [])))}
    common = sorted(set(last["uncurated"]) & set(last["curated"]))
    common = [g for g in common if last["uncurated"][g].get("heldout_per_text") and last["curated"][g].get(
        "heldout_per_text")]
    result["paired_ratio_by_generation"] = [
        {"generation": g, **{k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]) for k, v in
                             paired_ratio_interval(last["uncurated"][g]["heldout_per_text"],
                                                   last["curated"][g]["heldout_per_text"], seed=args.seed).items()}}
        for g in common]
    if common:
        g = common[-1]
        ratios = [pooled_perplexity({r["generation"]: r for r in rep["curated"]}[g]["heldout_per_text"])
                  / pooled_perplexity({r["generation"]: r for r in rep["uncurated"]}[g]["heldout_per_text"])
                  for rep in replicates
                  if g in {r["generation"] for r in rep.get("curated", [])}
                  and g in {r["generation"] for r in rep.get("uncurated", [])}]
        paired = paired_ratio_interval(last["uncurated"][g]["heldout_per_text"], last["curated"][g]["heldout_per_text"],
                                       seed=args.seed)
        result.update(ratio=round(sum(ratios) / len(ratios), 4), ratio_generation=g,
                      ratio_ci95_first_seed=[round(v, 4) for v in paired["ci95"]])
        first = {arm: next((r for r in arms[arm] if r["generation"] == 1), None) for arm in ("uncurated", "curated")}
        for arm in ("uncurated", "curated"):
            row = next(r for r in arms[arm] if r["generation"] == g)
            if first[arm] and first[arm]["heldout_perplexity"] and row["heldout_perplexity"]:
                result[f"{arm}_perplexity_vs_generation_1"] = round(row["heldout_perplexity"]
                                                                    / first[arm]["heldout_perplexity"], 4)
    loop = [r["loop_seconds"] for rows in arms.values() for r in rows if r.get("loop_seconds")]
    load = {"min": min(load), "mean": round(sum(load) / len(load), 2), "max": max(load), "samples": len(load)} \
        if load else None
    tokens = [r["training_tokens_per_s"] for rows in arms.values() for r in rows if r.get("training_tokens_per_s")]
    result.update(seconds_per_loop_generation=round(sum(loop) / len(loop), 1) if loop else None,
                  training_tokens_per_s=round(sum(tokens) / len(tokens), 1) if tokens else None,
                  wall_seconds=round(time.monotonic() - started, 1), load_average=load)
    return result


def _write(result: dict, figures: Path, replicates: list[dict]) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "recursion.json").write_text(json.dumps({**result, "replicates": replicates}, indent=1) + "\n")
    (figures / "recursion.svg").write_text(chart_svg(result))
    (figures / "recursion.md").write_text(markdown_table(result))


def _workers(logs: Path, generation_workers: int):
    from ouroboros.celery import app
    from tests.support.processes import CeleryProcess

    prefix = f"recursion-{os.getpid()}"
    # Generation at one llama.cpp thread: it runs beside the curation worker's embedder on 2 cores
    # (issue 12's note: 1 thread is 3-5x cheaper in CPU time there than 2).
    # Two generation processes by default: the two arms' chunks run at once, one core each.
    threads = {"OUROBOROS_LLAMA_THREADS": os.environ.get("OUROBOROS_LLAMA_THREADS", "1")}
    specs = [(f"generation-{i}", "generation", threads) for i in range(generation_workers)]
    specs += [("curation", "curation", {}), ("training", "training", {})]
    workers = [CeleryProcess(name, ["worker", "-Q", queue, "-c", "1", "-n", f"{prefix}-{name}@%h",
                                    "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                             logs / f"{name}.log", env) for name, queue, env in specs]
    deadline = time.monotonic() + 300
    while len([n for n in (app.control.inspect(timeout=1).ping() or {}) if n.startswith(prefix)]) < len(workers):
        dead = [w for w in workers if not w.alive()]
        if dead or time.monotonic() > deadline:
            for worker in workers:
                worker.stop()
            raise RuntimeError(f"the workers did not come up:\n{(dead or workers)[0].log_tail()}")
    return workers


def _arm_thread(*, arm: str, seed: int, lineage, args, rows: list, stopped: dict, lock, changed) -> None:
    """One lineage's G generations, one loop_run each; a generation with no accepted sample is topped up."""
    from django.db import connection

    from generation.services.jobs import job_create
    from generation.services.loop_runner import LoopError, loop_run

    def say(line: str) -> None:
        print(f"[{arm} s{seed}] {line}", file=sys.stderr, flush=True)

    try:
        for number in range(1, args.generations + 1):
            job_seed = seed + (number - 1) * SEED_STRIDE
            extra, extra_seconds = 0, 0.0
            while True:
                try:
                    [report] = loop_run(lineage=lineage, generations=1, items=args.items, seed=job_seed, say=say,
                                        timeout=args.timeout, review_mode=ARMS[arm]["review_mode"])
                    break
                except LoopError as exc:
                    if "has no accepted samples" not in str(exc) or extra >= args.items * args.top_ups:
                        raise
                    # Every sample was flagged: the builder refuses an empty generation. Ask for N more
                    # (another job in the same generation, the next seed) rather than end the arm here.
                    say(f"generation {number}: every sample was flagged; topping up with {args.items} more items")
                    extra += args.items
                    started = time.monotonic()
                    job_create(lineage=lineage, requested=args.items, seed=job_seed + extra)
                    extra_seconds += time.monotonic() - started
            report.seconds["generate"] = round(report.seconds.get("generate", 0.0) + extra_seconds, 1)
            row = _generation_row(lineage=lineage, number=number, report=report, seed=seed)
            row["extra_items"] = extra
            with lock:
                rows.append(row)
                if number == args.generations:
                    rows.append(_student_row(lineage=lineage, number=number + 1, seed=seed))
                changed.set()
            say(f"generation {number} row: " + json.dumps({k: v for k, v in row.items() if k != "heldout_per_text"}))
    except LoopError as exc:
        with lock:
            stopped[f"{arm} seed {seed}"] = str(exc)
            changed.set()
        say(f"stopped: {exc}")
    except BaseException as exc:  # anything else ends this arm, with its cause, and lets the other go on
        with lock:
            stopped[f"{arm} seed {seed}"] = f"{type(exc).__name__}: {exc}"
            changed.set()
        say(f"stopped by an error: {type(exc).__name__}: {exc}")
        raise
    finally:
        connection.close()


def render(path: Path) -> dict:
    """Recompute the summary, chart and table from a run's recursion.json (its replicates), in place.

    For a run made by an earlier version of this file, or stopped before its end: no services needed.
    """
    saved = json.loads(path.read_text())
    replicates = [{arm: [{**row, "heldout_per_text": [tuple(p) for p in row["heldout_per_text"]]
                          if row.get("heldout_per_text") else None} for row in rows]
                   for arm, rows in replicate.items()} for replicate in saved["replicates"]]
    args = argparse.Namespace(**{key: saved.get(key) for key in ("generations", "items", "seed", "seeds")})
    args.answers = saved.get("answers_per_item")
    result = _summary(args=args, replicates=replicates, stopped=saved.get("stopped", {}),
                      started=time.monotonic() - saved.get("wall_seconds", 0), complete=saved.get("complete", False),
                      load=[])
    result["load_average"] = saved.get("load_average")
    _write(result, path.parent, saved["replicates"])
    return result


def main() -> int:
    if sys.argv[1:2] == ["--render"]:
        if len(sys.argv) != 3:
            sys.exit("usage: python -m bench.recursion --render FIGURES/recursion.json")
        print(json.dumps(render(Path(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, required=True)
    parser.add_argument("--items", type=int, required=True, help="items per generation and arm")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--seeds", type=int, default=1, help="replicate pairs of lineages, seeds S .. S+K-1")
    parser.add_argument("--answers", type=int, default=2, help="student answers per item")
    parser.add_argument("--generation-workers", type=int, default=2,
                        help="worker processes on the generation queue (default 2, one llama.cpp thread each)")
    parser.add_argument("--top-ups", type=int, default=2,
                        help="times a generation whose every sample was flagged gets N more items (default 2)")
    parser.add_argument("--figures", default="bench/figures", help="folder for recursion.json and recursion.svg")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds any one loop step may take")
    args = parser.parse_args()
    for name in ("generations", "items", "seeds", "answers", "generation_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    # A curated set can be one accepted sample and one real passage: train on it rather than stop the arm.
    os.environ.setdefault("OUROBOROS_TRAINING_MIN_RECORDS", "1")

    import threading

    import django

    # `timeout` or Ctrl-C must still reach the `finally` that stops the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django.setup()
    from django.conf import settings

    from ouroboros.celery import app

    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    figures = Path(args.figures)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-recursion-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"worker logs in {logs}; training min records {settings.OUROBOROS['TRAINING_MIN_RECORDS']}",
          file=sys.stderr, flush=True)
    seeds = [args.seed + k for k in range(args.seeds)]
    lineages = {seed: {arm: _setup_lineage(arm=arm, seed=seed, stamp=stamp, answers=args.answers) for arm in ARMS}
                for seed in seeds}
    replicates = [{arm: [] for arm in ARMS} for _ in seeds]
    stopped: dict = {}
    load: list = []
    lock, changed = threading.Lock(), threading.Event()
    app.control.purge()
    workers = _workers(logs, args.generation_workers)
    try:
        # Both arms (of every seed) run at once on the same three workers: the same load falls on both, and
        # one arm's training overlaps the other's generating. Each waits its turn on a worker's queue.
        threads = [threading.Thread(target=_arm_thread, daemon=True, name=f"{arm}-{seed}", kwargs=dict(
            arm=arm, seed=seed, lineage=lineages[seed][arm], args=args, rows=replicates[k][arm], stopped=stopped,
            lock=lock, changed=changed)) for k, seed in enumerate(seeds) for arm in ARMS]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            load.append(round(os.getloadavg()[0], 2))
            if changed.wait(timeout=60):
                changed.clear()
                with lock:
                    _write(_summary(args=args, replicates=replicates, stopped=stopped, started=started,
                                    complete=False, load=load), figures, replicates)
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"the {worker.name} worker died:\n{worker.log_tail()}")
    finally:
        for worker in workers:
            worker.stop()
        app.control.purge()
    result = _summary(args=args, replicates=replicates, stopped=stopped, started=started, complete=not stopped,
                      load=load)
    _write(result, figures, replicates)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
