"""curation never imports generation: generation depends on curation, never the reverse (DESIGN.md).

generation plugs into curation through curation/extensions.py (signals, page
panels, settings sections) instead.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CURATION = Path(__file__).resolve().parents[2] / "curation"


def generation_imports(path: Path) -> list[str]:
    """Every import of generation (or of a name under it) in one file, as `line: statement`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name == "generation" or name.startswith("generation.")]
    return found


def test_no_file_of_curation_imports_generation():
    files = sorted(CURATION.rglob("*.py"))
    assert len(files) > 30, "the walk found curation's files"
    offenders = {str(path.relative_to(CURATION.parent)): hits for path in files if (hits := generation_imports(path))}
    assert offenders == {}


@pytest.mark.parametrize("source", [
    "from generation.models import GenerationJob",
    "import generation.services",
    "def f():\n    from generation import tasks",
    "import importlib\nimportlib.import_module('generation.backends')",
])
def test_the_walk_catches_every_kind_of_import(tmp_path, source):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert generation_imports(path)


def test_the_walk_leaves_curation_own_names_alone(tmp_path):
    path = tmp_path / "module.py"
    path.write_text("from curation.services.metrics import generation_metrics_compute\nimport generational\n")
    assert generation_imports(path) == []
