"""The report: one row per configuration, mean ± std over seeds, failed runs shown as such."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cnn_study.reference import study_figures
from tests.conftest import NO_FIGURES


def cli(*args: str, cwd: Path, out: Path) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
        env={**os.environ, "CNN_STUDY_OUTPUT": str(out)},
    )  # fmt: skip


def test_sweep_report_rows_mean_std_and_failures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = cli("-m", "cnn_study", "-m", "data=fake", "trainer=debug", *NO_FIGURES,
                "seed=0,1", "scheduler=constant,step", cwd=tmp_path, out=out)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    failed = cli("-m", "cnn_study", "data=fake", "arch=gap4", "arch.input_size=16",
                 cwd=tmp_path, out=out)  # fmt: skip
    assert failed.returncode == 2
    (sweep_dir,) = (out / "multirun").iterdir()
    report = cli("-m", "cnn_study.report", str(sweep_dir), str(out / "runs"), cwd=tmp_path, out=out)
    assert report.returncode == 0, report.stderr[-2000:]

    with (sweep_dir / "report.csv").open() as handle:
        header, *rows = list(csv.reader(handle))
    completed = {
        next(o for o in row[0].split() if o.startswith("scheduler=")): dict(zip(header, row))
        for row in rows
        if row[1] == "completed"
    }
    assert set(completed) == {"scheduler=constant", "scheduler=step"}
    for name, row in completed.items():
        assert row["seeds"] == "2"
        accuracies = [
            json.loads((job / "results.json").read_text())["test/acc"]
            for job in sweep_dir.iterdir()
            if job.is_dir() and f"{name}" in (job / "results.json").read_text()
        ]
        assert len(accuracies) == 2
        expected = f"{statistics.fmean(accuracies):.4g} ± {statistics.stdev(accuracies):.2g}"
        assert row["acc"] == expected
        assert row["study acc"] == "—"  # fake data: no study figure beside it
    failures = [row for row in rows if row[1].startswith("failed")]
    assert len(failures) == 1 and "input_size=16" in failures[0][1]
    markdown = (sweep_dir / "report.md").read_text()
    assert "scheduler=step" in markdown and "failed" in markdown
    with Image.open(sweep_dir / "val_curves.png") as image:
        assert image.size[0] > 500


@pytest.mark.parametrize(
    ("overrides", "accuracy"),
    [
        (["experiment=a7_lr_schedule", "scheduler=step"], 0.7539),
        (["experiment=a1_baseline", "trainer.max_epochs=2"], 0.7379),
        (["experiment=a3_regularization", "regularization=a3/d04_wd1e-2"], 0.6745),
        (["experiment=a7_lr_schedule", "scheduler=step", "data=fake"], None),
        (["arch=cnn5"], None),
    ],
)
def test_study_figures_match_the_configuration(overrides, accuracy) -> None:
    figures = study_figures(overrides)
    assert (figures or {}).get("test/acc") == (pytest.approx(accuracy) if accuracy else None)
