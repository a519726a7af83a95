"""Help and config errors answer before torch and Lightning are imported (seconds, not the
15-20 s those imports take on a loaded 2-core machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the app as `python -m cnn_study ARGS` would, then says which heavy modules it loaded.
PROBE = """
import json, runpy, sys
sys.argv = ["cnn_study", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("cnn_study", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "lightning", "torchvision", "timm") if m in sys.modules)
print("PROBE" + json.dumps({"code": code, "heavy": heavy}))
"""


def probe(tmp_path: Path, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "CNN_STUDY_OUTPUT": str(tmp_path / "out")}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line.removeprefix("PROBE")), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--help"], 0, "Configuration groups"),
        (["--cfg", "job"], 0, "max_epochs"),
        (["arch=no_such"], 2, "Could not find 'arch/no_such'"),
        (["trainer.max_epoch=3"], 2, "max_epoch"),
        (["optimizer.lr=-1"], 2, "optimizer.lr=-1: must be a number > 0"),
        (["arch=gap4", "arch.input_size=16"], 2, "need at least 46 px"),
    ],
)
def test_help_and_config_errors_never_import_torch(tmp_path: Path, args, code, says) -> None:
    result, output = probe(tmp_path, *args)
    assert result["code"] == code, output[-2000:]
    assert says in output
    assert result["heavy"] == [], f"{args} imported {result['heavy']}"


def test_a_rejected_single_run_leaves_no_run_folder(tmp_path: Path) -> None:
    result, _ = probe(tmp_path, "optimizer.lr=-1")
    assert result["code"] == 2
    assert list((tmp_path / "out").rglob("*.json")) == []
    runs = tmp_path / "out" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
