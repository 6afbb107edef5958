"""Production code carries no test-only hook: tests inject faults and delays from test modules
(e.g. tests/support/slow_imports.py, loaded into a worker with `--include`)."""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("curation", "generation", "ouroboros")


def test_no_setting_or_environment_variable_exists_only_for_tests():
    assert [name for name in settings.OUROBOROS if "TEST" in name] == []
    hooks = []
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for match in re.finditer(r"OUROBOROS_\w*TEST\w*", path.read_text(encoding="utf-8")):
                hooks.append(f"{path.relative_to(ROOT)}: {match.group()}")
    assert hooks == []
