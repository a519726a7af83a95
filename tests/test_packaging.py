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
