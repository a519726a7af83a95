"""What a plain (non-editable) install ships: every subpackage of cnn_study and every
config. A subpackage missing from pyproject's list imports from a checkout but not from
an installed wheel (Study C's first jobs all failed so: `No module named cnn_study.recipe`)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])  # fmt: skip
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "cnn_study").rglob("__init__.py")
    }
    assert found - listed == set()


def test_the_run_core_imports_nothing_of_the_study_layer() -> None:
    """A run (its wiring, folder contract, lock, processes, checkpoints) stands without
    studies; studies build on runs, never the other way round."""
    import ast

    core = ["train.py", "rundir.py", "runlock.py", "processes.py", "checkpoint_io.py",
            "module.py", "metrics.py"]  # fmt: skip
    for name in core:
        tree = ast.parse((REPO / "cnn_study" / name).read_text())
        imported = [node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module]  # fmt: skip
        assert not [m for m in imported if m.startswith("cnn_study.study")], name
