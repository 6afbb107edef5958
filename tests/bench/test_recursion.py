"""The pure parts of bench/recursion.py: perplexity pooling, its spreads, the per-seed aggregation and the
chart (no models, no services)."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from bench.recursion import (
    aggregate,
    bootstrap_interval,
    chart_svg,
    markdown_table,
    paired_ratio_interval,
    pooled_perplexity,
    seeds_spread,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_pooled_perplexity_weighs_each_text_by_its_tokens():
    # 10 tokens at mean NLL 1 and 30 at mean NLL 2: exp((10 + 60) / 40), not the mean of e and e².
    assert pooled_perplexity([(10.0, 10), (60.0, 30)]) == pytest.approx(math.exp(70 / 40))
    with pytest.raises(ValueError, match="no scored tokens"):
        pooled_perplexity([(0.0, 0)])


def test_the_bootstrap_interval_holds_the_estimate_and_collapses_when_texts_agree():
    same = [(20.0, 10)] * 6
    assert bootstrap_interval(same, seed=1) == pytest.approx([math.exp(2), math.exp(2)])
    spread = [(10.0, 10), (20.0, 10), (30.0, 10), (40.0, 10), (25.0, 10)]
    low, high = bootstrap_interval(spread, seed=1)
    assert low < pooled_perplexity(spread) < high
    assert math.exp(1) <= low and high <= math.exp(4), "a resample never leaves the texts' own range"
    assert bootstrap_interval(spread, seed=1) == [low, high], "seeded: the same interval twice"


def test_the_paired_ratio_sees_a_uniform_shift_that_unpaired_intervals_would_hide():
    base = [(10.0, 10), (40.0, 10), (25.0, 10), (15.0, 10)]
    other = [(nll + 1.0, tokens) for nll, tokens in base]  # every text 0.1 nats/token worse
    paired = paired_ratio_interval(base, other, seed=3)
    assert paired["ratio"] == pytest.approx(math.exp(0.1))
    assert paired["ci95"] == pytest.approx([math.exp(0.1), math.exp(0.1)])
    unpaired_base, unpaired_other = bootstrap_interval(base, seed=3), bootstrap_interval(other, seed=4)
    assert unpaired_other[0] < unpaired_base[1], "alone, the two intervals overlap"
    with pytest.raises(ValueError, match="paired texts differ in number: 4 and 3"):
        paired_ratio_interval(base, other[:3])


def test_seeds_spread_leaves_out_missing_values_and_has_no_sd_for_one_seed():
    spread = seeds_spread([2.0, None, 4.0, 6.0])
    assert spread == {"mean": 4.0, "sd": pytest.approx(2.0), "min": 2.0, "max": 6.0, "n": 3}
    assert seeds_spread([5.0])["sd"] is None
    assert seeds_spread([None]) is None


def _row(generation, ppl, d2, seconds=None, ci=None):
    return {"generation": generation, "heldout_perplexity": ppl, "heldout_perplexity_ci95": ci,
            "distinct_2_generated": d2, "seconds": seconds or {"generate": 10.0, "train": 30.0}}


def test_one_replicate_keeps_its_bootstrap_interval_as_the_spread():
    arms = aggregate([{"curated": [_row(1, 12.0, 0.8, ci=[11.0, 13.0]), _row(2, 11.0, None)]}])
    first, second = arms["curated"]
    assert (first["heldout_perplexity"], first["distinct_2_generated"]) == (12.0, 0.8)
    assert first["heldout_perplexity_spread"] == {"kind": "bootstrap over held-out passages", "ci95": [11.0, 13.0]}
    assert second["distinct_2_generated"] is None and second["heldout_perplexity_spread"] is None
    assert first["seconds"] == {"generate": 10.0, "train": 30.0}


def test_several_replicates_average_per_generation_and_spread_over_the_seeds():
    replicates = [{"uncurated": [_row(1, 10.0, 0.8, {"generate": 10.0}), _row(2, 14.0, 0.6)]},
                  {"uncurated": [_row(1, 12.0, 0.7, {"generate": 20.0})]}]  # the second seed stopped after one
    first, second = aggregate(replicates)["uncurated"]
    assert (first["replicates"], first["heldout_perplexity"], first["distinct_2_generated"]) == (2, 11.0, 0.75)
    assert first["heldout_perplexity_spread"] == {"kind": "over 2 seeds", "sd": pytest.approx(math.sqrt(2)),
                                                  "min": 10.0, "max": 12.0}
    assert first["seconds"] == {"generate": 15.0}
    assert (second["replicates"], second["heldout_perplexity"]) == (1, 14.0)


def test_the_chart_is_valid_svg_with_a_point_per_value_and_escaped_text():
    result = {"generations": 2, "items": 3, "seed": 7, "seeds": 1, "spread": "bootstrap <95%> & more",
              "arms": aggregate([{"uncurated": [_row(1, 12.0, 0.8, ci=[11.0, 13.0]), _row(2, 14.0, 0.7),
                                                _row(3, 15.0, None)],
                                  "curated": [_row(1, 12.0, 0.8), _row(2, 11.5, 0.82), _row(3, 11.0, None)]}])}
    svg = chart_svg(result)
    root = ET.fromstring(svg)  # well-formed: the "<95%> &" in the spread was escaped
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 3 + 3 + 2 + 2, "perplexity for generations 1-3, distinct-2 for 1-2, both arms"
    assert len(root.findall(f"{SVG}polyline")) == 4
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "bars: bootstrap <95%> & more" in texts and "uncurated" in texts and "curated" in texts
    # A higher perplexity is drawn higher up (a smaller y) in its panel.
    by_title = {c.find(f"{SVG}title").text: float(c.get("cy")) for c in circles}
    assert by_title["uncurated, generation 3: 15"] < by_title["curated, generation 3: 11"]


def test_the_chart_of_a_run_with_no_rows_yet_says_so():
    root = ET.fromstring(chart_svg({"arms": {"uncurated": [], "curated": []}, "complete": False}))
    assert "no data yet" in "".join(t.text or "" for t in root.iter(f"{SVG}text"))


def test_the_markdown_table_has_a_row_per_arm_and_generation_with_dashes_for_what_is_missing():
    rows = [{**_row(1, 12.0, 0.8, {"generate": 1181.3, "train": 60.0}, ci=[11.0, 13.5]), "samples": 8, "accepted": 3,
             "training_records": 4, "training_real_records": 1},
            {"generation": 2, "heldout_perplexity": 11.5, "heldout_perplexity_ci95": None, "seconds": {}}]
    table = markdown_table({"arms": aggregate([{"curated": rows}])})
    header, rule, first, second = table.splitlines()
    assert header.count("|") == rule.count("|") == first.count("|") == second.count("|")
    assert first.startswith("| curated | 1 | 12 (11–13.5) | 0.8 / – |") and "| 8 (3) | 4 (1) |" in first
    assert "| 1181 / – / – / – / 60 / – |" in first, "seconds in plain digits, not 1.18e+03"
    assert second.startswith("| curated | 2 | 11.5 | – / – |") and second.endswith("| – |")


def test_the_chart_adds_the_paired_ratio_panel_when_the_run_has_one():
    result = {"arms": aggregate([{"uncurated": [_row(1, 12.0, 0.8)], "curated": [_row(1, 12.0, 0.8)]}]),
              "paired_ratio_by_generation": [{"generation": 1, "ratio": 1.0, "ci95": [1.0, 1.0]},
                                             {"generation": 2, "ratio": 0.9, "ci95": [0.85, 0.95]}]}
    root = ET.fromstring(chart_svg(result))
    titles = [c.find(f"{SVG}title").text for c in root.findall(f"{SVG}circle")]
    assert "curated ÷ uncurated, generation 2: 0.9" in titles
    assert int(root.get("width")) > int(ET.fromstring(chart_svg({"arms": result["arms"]})).get("width"))
