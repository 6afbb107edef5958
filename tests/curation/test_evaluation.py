"""`evaluate_flags` and `calibrate_flags` on the shipped labelled sets."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from curation.models import Lineage
from curation.services.review import sample_accept, sample_reject
from tests.factories import make_sample

DATA = Path(__file__).resolve().parent.parent / "data"
ROOT = DATA.parent.parent
KEYS = ["n", "roc_auc", "pr_auc", "best_f1", "threshold_at_best_f1", "seconds", "signals"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_hallucination_evaluation_prints_the_fixed_json_and_separates_the_classes(capsys):
    call_command("evaluate_flags", "hallucination", str(DATA / "hallucination_test.jsonl"), "--no-lm")
    result = last_json(capsys)
    assert list(result) == KEYS and result["n"] == 48
    # 0.961 / 0.956 with detector 2.0, tuned on these hand-written sets; the 3.0 model is fitted on public
    # WikiBio and transfers to them at 0.83 / 0.84 (README "Flagging"): the bar guards against a collapse.
    assert result["roc_auc"] > 0.80 and result["pr_auc"] > 0.80, result


def test_near_duplicate_evaluation_on_public_paraphrase_pairs(capsys):
    call_command("evaluate_flags", "near_duplicate", str(DATA / "near_duplicate_stsb.jsonl"))
    result = last_json(capsys)
    assert list(result) == KEYS and result["n"] == 80
    assert result["roc_auc"] > 0.8, result
    assert 0 <= result["threshold_at_best_f1"] <= 1


@pytest.mark.parametrize("content,message", [
    ('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "b": "y", "label": 0}\nnot json\n', "line 3: not valid JSON"),
    ('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "label": 0}\n', "line 2: missing 'b'"),
    ('{"a": "x", "b": "y", "label": 2}\n', "line 1: 'label' must be 0 or 1"),
    ('{"a": "x", "b": "y", "label": 1, "score": 7}\n', "line 1: 'score' must be a number from 0 to 5"),
    ('{"a": "x", "b": "y", "label": 1}\n', "both classes are needed"),
])
def test_a_bad_line_is_named_with_its_number(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_flags", "near_duplicate", str(path))


def test_a_bad_hallucination_line_exits_non_zero_naming_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "s", "text": "t", "label": 0}\n{"source": 3, "text": "t", "label": 1}\n')
    done = subprocess.run([sys.executable, "manage.py", "evaluate_flags", "hallucination", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "bad.jsonl line 2: 'source' must be a string or a list of strings" in done.stderr


@pytest.mark.django_db
def test_calibration_from_review_decisions_reports_and_applies_a_threshold(lineage, reviewer, capsys):
    scored = [(0.9, "reject"), (0.8, "reject"), (0.6, "accept"), (0.7, "reject"), (0.2, "accept"), (0.1, "accept"),
              (0.95, "reject-other")]
    for score, decision in scored:
        sample = make_sample(lineage, hallucination_score=score)
        if decision == "accept":
            sample_accept(sample=sample, reviewer=reviewer)
        else:
            sample_reject(sample=sample, reviewer=reviewer,
                          reason="off-topic" if decision == "reject-other" else "hallucination")
    make_sample(lineage, hallucination_score=0.99)  # pending: not a label
    call_command("calibrate_flags", lineage.slug, "hallucination", "--apply")
    result = last_json(capsys)
    assert result["n"] == 6 and result["source"] == "review log"
    assert (result["threshold"], result["precision"], result["recall"]) == (0.7, 1.0, 1.0)
    assert Lineage.objects.get(pk=lineage.pk).hallucination_threshold == pytest.approx(0.7)


@pytest.mark.django_db
def test_calibration_without_labels_of_both_kinds_is_refused(lineage):
    with pytest.raises(CommandError, match="both classes"):
        call_command("calibrate_flags", lineage.slug, "near_duplicate")


@pytest.mark.django_db
def test_calibration_from_a_file_with_a_precision_target(lineage, capsys):
    call_command("calibrate_flags", lineage.slug, "near_duplicate", "--file", str(DATA / "near_duplicate_dev.jsonl"),
                 "--min-precision", "0.95")
    result = last_json(capsys)
    assert result["precision"] >= 0.95 and result["applied"] is False
    assert Lineage.objects.get(pk=lineage.pk).duplicate_threshold == lineage.duplicate_threshold
