"""Data shipped in the repository may be redistributed: every file in tests/data has its source and
license in tests/data/README.md, and nothing under a non-commercial license (MRPC) is left."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def test_every_data_file_names_its_source_and_license():
    listed = set(re.findall(r"`([\w.-]+)`", (DATA / "README.md").read_text(encoding="utf-8")))
    files = {path.name for path in DATA.iterdir() if path.is_file() and path.suffix != ".pyc"}
    assert files - listed == set(), "add these to tests/data/README.md with their source and license"


def test_no_mrpc_data_or_reference_is_left():
    allowed = {"tests/data/README.md", "tests/test_data_licenses.py"}  # the note that says it was removed
    offenders = []
    for name in tracked_files():
        if name in allowed:
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        if re.search(r"mrpc|Microsoft Research Paraphrase", text, re.IGNORECASE) or "mrpc" in name.lower():
            offenders.append(name)
    assert offenders == []
