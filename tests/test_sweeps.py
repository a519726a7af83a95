"""Hydra launchers and sweepers: joblib in parallel, SLURM through submitit, Optuna search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cnn_study.errors import CnnStudyError
from cnn_study.train import objective_value, run
from tests.conftest import NO_FIGURES, ComposeFn
from tests.test_train import cli

QUICK = ("data=fake", "data.train_size=64", "trainer=cpu", "trainer.max_epochs=1", *NO_FIGURES)


def statuses(sweep_dir: Path) -> dict[str, str]:
    summary = json.loads((sweep_dir / "summary.json").read_text())
    return {tuple(job["overrides"])[-1]: job["status"] for job in summary["jobs"]}


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    done = cli(
        "-m", *QUICK, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    assert statuses(sweep_dir) == {"seed=0": "completed", "seed=1": "completed"}
    first, second = (json.loads((sweep_dir / n / "results.json").read_text()) for n in "01")
    assert first["test/loss"] != second["test/loss"]  # two seeds, two runs


def test_slurm_launcher_config_composes(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    plain = compose_cfg("hydra/launcher=submitit_slurm")
    assert plain.hydra.launcher._target_ == launcher._target_


def test_optuna_search_marks_a_diverged_trial_failed_and_goes_on(tmp_path: Path) -> None:
    # A search of the user's own, beside the package's: one where lr=1e30 diverges. No -m:
    # an hparams_search switches Hydra to multirun by itself.
    configs = tmp_path / "configs" / "hparams_search"
    configs.mkdir(parents=True)
    (configs / "optuna_probe.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - a3_optuna\n  - _self_\n"
        "hydra:\n  sweeper:\n    n_trials: 4\n    n_jobs: 2\n"
        "    params:\n      optimizer.lr: choice(1.0e-3, 1.0e30)\n"
    )
    sweep_dir = tmp_path / "sweep"
    done = cli(
        *QUICK, "hparams_search=optuna_probe", "data=fake",
        "objective.metric=test/loss", "objective.direction=minimize",
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    jobs = json.loads((sweep_dir / "summary.json").read_text())["jobs"]
    assert len(jobs) == 4
    by_lr = {job["status"]: job for job in jobs}
    assert set(by_lr) == {"completed", "diverged"}
    assert "optimizer.lr=1e+30" in by_lr["diverged"]["overrides"]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"]["optimizer.lr"] == 1.0e-3
    losses = [
        json.loads((sweep_dir / job["job"] / "results.json").read_text())["test/loss"]
        for job in jobs
        if job["status"] == "completed"
    ]
    assert best["best_value"] == min(losses)  # the configured objective, minimised


def test_objective_is_read_from_the_results_the_config_names(compose_cfg: ComposeFn) -> None:
    results = {"best_val/acc": 0.5, "test/loss": 1.25, "status": "completed"}
    assert objective_value(compose_cfg(), results) == 0.5
    chosen = compose_cfg("objective.metric=test/loss", "objective.direction=minimize")
    assert objective_value(chosen, results) == 1.25
    assert objective_value(compose_cfg("objective.metric=val/f1"), results) is None
    search = compose_cfg("hparams_search=a3_optuna", "objective.direction=minimize")
    assert search.hydra.sweeper.direction == "minimize"


def test_objective_direction_is_checked(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg("data=fake", "debug=limit", "objective.direction=up")
    with pytest.raises(CnnStudyError, match=r"objective\.direction='up'; choose one of"):
        run(cfg)
