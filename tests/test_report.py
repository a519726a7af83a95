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

from cnn_study.errors import CnnStudyError
from cnn_study.rundir import Run
from cnn_study.study.report import best_by_objective, group
from cnn_study.train import run
from tests.conftest import compose_run_config, execute_report_notebook


def cli(*args: str, cwd: Path, out: Path) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
        env={**os.environ, "CNN_STUDY_OUTPUT": str(out)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """2 schedulers × 2 seeds on fake data (with Grad-CAM figures), and a sweep whose one
    job was rejected (a sweep records it; a single run rejected so leaves no folder)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    out = tmp_path / "out"
    grid = ("data=fake", "debug=limit", "~callbacks.evaluation_figures", "seed=0,1",
            "scheduler=constant,step", f"hydra.sweep.dir={out}/grid")  # fmt: skip
    sweep = cli("-m", "cnn_study", "-m", *grid, cwd=tmp_path, out=out)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    # The sweep's one job, run as a sweep runs it (in-process here): refused, recorded.
    rejected = compose_run_config(out / "rejected" / "0", "data=fake", "arch=gap4",
                                  "arch.input_size=16")  # fmt: skip
    with pytest.raises(CnnStudyError, match="need at least 46 px"):
        run(rejected)
    return out / "grid", out


def test_sweep_report_rows_mean_std_and_failures(tiny_sweep, tmp_path: Path) -> None:
    sweep_dir, out = tiny_sweep
    report = cli("-m", "cnn_study.study.report", str(sweep_dir), str(out / "rejected"),
                 cwd=tmp_path, out=out)  # fmt: skip
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
    # the rejected job (a config error before any checkpoint) is no configuration
    assert [row for row in rows if row[1] != "completed"] == []
    markdown = (sweep_dir / "report.md").read_text()
    assert "scheduler=step" in markdown
    rejected = markdown.split("## Rejected before training", 1)[1]
    assert rejected.count("| ") and "arch.input_size=16" in rejected
    assert "need at least 46 px" in rejected
    assert len(json.loads((sweep_dir / "report.json").read_text())["rejected"]) == 1
    best = json.loads((sweep_dir / "report.json").read_text())["best_by_objective"]
    means = {
        name: statistics.fmean(
            json.loads((job / "results.json").read_text())["best_val/acc"]
            for job in sweep_dir.iterdir()
            if job.is_dir() and name in (job / "results.json").read_text()
        )
        for name in completed
    }
    assert (best["metric"], best["direction"]) == ("best_val/acc", "maximize")
    assert best["value"] == pytest.approx(max(means.values()))
    assert "Best by the runs' objective (best_val/acc, maximize; mean over seeds" in markdown
    with Image.open(sweep_dir / "val_curves.png") as image:
        assert image.size[0] > 500


def test_notebook_runs_on_a_sweep(tiny_sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_dir, _ = tiny_sweep
    text, images = execute_report_notebook(sweep_dir, monkeypatch)
    assert "4 runs, 2 configurations" in text
    assert "scheduler=step" in text and "± " in text
    assert "not a study folder: no parts or claims" in text
    assert images == 1 + 4  # the validation curves, one Grad-CAM figure per run


def test_notebook_says_why_it_stops_on_a_folder_without_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CNN_STUDY_SWEEP", str(tmp_path))
    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "study_report.ipynb", 4)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match=r"no results\.json under"):
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()


def test_best_by_objective_follows_the_direction_and_refuses_mixed_objectives() -> None:
    def run(path: str, loss: float, direction: str = "minimize", seed: int = 0) -> Run:
        results = {"status": "completed", "overrides": [path], "test/loss": loss, "seed": seed,
                   "objective": {"metric": "test/loss", "direction": direction}}  # fmt: skip
        return Run(Path(f"{path}/{seed}"), results)

    rows = group([run("lr=0.1", 0.9), run("lr=0.1", 0.7, seed=1), run("lr=0.01", 0.4),
                  run("lr=0.01", 0.6, seed=1)])  # fmt: skip
    best = best_by_objective(rows)
    assert best["configuration"] == "lr=0.01" and best["value"] == pytest.approx(0.5)
    assert best["seeds"] == 2
    assert best_by_objective(group([run("a", 0.9), run("b", 0.4, "maximize")])) is None


def test_a_one_seed_duplicate_never_wins_and_seeds_are_counted_not_runs() -> None:
    """Three seeds of one configuration (mean 0.5) against a one-seed configuration at
    0.1: the mean of several wins. Two runs of seed 0 and one of seed 1 are two seeds,
    their interval over two per-seed means."""

    def run(path: str, loss: float, seed: int) -> Run:
        results = {"status": "completed", "overrides": [path], "test/loss": loss,
                   "test/acc": loss, "seed": seed,
                   "objective": {"metric": "test/loss", "direction": "minimize"}}  # fmt: skip
        return Run(Path(f"{path}/{seed}"), results)

    several = [run("several", v, s) for s, v in enumerate((0.4, 0.5, 0.6))]
    best = best_by_objective(group([*several, run("duplicate", 0.1, 0)]))
    assert best["configuration"] == "several" and best["seeds"] == 3
    (row,) = group([run("x", 0.70, 0), run("x", 0.72, 0), run("x", 0.80, 1)])
    assert row.distinct_seeds == 2
    assert row.estimate("test/acc").n == 2
    assert row.estimate("test/acc").mean == pytest.approx((0.71 + 0.80) / 2)


def test_a_report_judges_the_last_completed_look_and_lists_the_next_rounds_runs(
    tmp_path: Path,
) -> None:
    """Look 1 counted seeds 0-2 (not resolved); seed 3 ran in the round after it, which
    did not finish: the report judges look 1 and lists seed 3 as counted at the next look,
    as it says ("verdicts at look 1")."""
    from cnn_study.study.report import RUN_COLUMNS, write_report_from_runs, write_runs_csv

    study = {"title": "looks", "seeds": [0, 1, 2],
             "parts": [{"name": "a", "overrides": ["scheduler=step"]},
                       {"name": "b", "overrides": ["scheduler=cosine"]}],
             "claims": [{"text": "a beats b", "order": ["a", "b"]}],
             "run": {"until_resolved": True, "max_looks": 2, "max_seeds": 5}}  # fmt: skip
    (tmp_path / "study.yaml").write_text(json.dumps(study))
    # a − b: +0.2, −0.1, +0.3 points (unresolved) then +5 points on seed 3
    rows = [{"part": part, "seed": seed, "status": "completed", "look": 1 if seed < 3 else None,
             "test/acc": acc, "run": f"{part}/seed{seed}"}
            for part, accs in (("a", (0.702, 0.699, 0.703, 0.75)), ("b", (0.70,) * 4))
            for seed, acc in enumerate(accs)]  # fmt: skip
    assert set(rows[0]) <= set(RUN_COLUMNS)
    write_runs_csv(rows, tmp_path / "runs.csv")
    write_report_from_runs(tmp_path / "runs.csv", tmp_path / "study.yaml", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["parts"]["a"]["seeds"] == [0, 1, 2]
    assert summary["pending_runs"] == ["a/seed3", "b/seed3"]
    (claim,) = summary["claims"]
    assert claim["verdict"] == "not resolved"
    assert claim["differences"][0]["seeds"] == [0, 1, 2]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Verdicts at look 1 of 2 planned" in markdown
    assert "a: seed 3, counted at the next look" in markdown
