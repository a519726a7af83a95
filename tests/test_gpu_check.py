"""`make gpu-check`: the GPU day's script composes today (its commands are real configs)
and, without a GPU, says so and succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_study.bench import gpu_check
from tests.conftest import compose_run_config


def test_every_training_step_of_the_gpu_check_composes(tmp_path: Path) -> None:
    assert [name for name, _ in gpu_check.steps(tmp_path, gpus=1)] == [
        "a1", "bench", "stream", "ddp", "predict", "explain"]  # fmt: skip
    commands = dict(gpu_check.steps(tmp_path, gpus=2))
    assert list(commands) == ["a1", "bench", "stream", "ddp", "study", "predict", "explain"]
    assert "device=cuda" in commands["explain"] and "device=cuda" in commands["predict"]
    # the multi-GPU plan: a 2 × 2 study whose every job is DDP on every GPU
    from cnn_study.study.definition import read_study
    from cnn_study.study.membership import part_configs

    gpu_check.write_ddp_study(tmp_path / "ddp_study.yaml")
    study = read_study(tmp_path / "ddp_study.yaml")
    assert len(study.parts) == 2 and study.seeds == [0, 1]
    for config in part_configs(study).values():
        assert '"strategy": "ddp"' in config and '"devices": -1' in config
    for name in ("a1", "ddp"):
        overrides = [a for a in commands[name][3:] if not a.startswith("hydra.run.dir=")]
        cfg = compose_run_config(tmp_path / name, *overrides)
        assert cfg.data._target_.endswith("FakeDataModule")  # no CNN_STUDY_DATA in tests
        assert cfg.trainer.max_epochs == {"a1": 2, "ddp": 1}[name]
    assert "data.placement=device" in commands["a1"]
    assert compose_run_config(tmp_path / "d", *commands["ddp"][3:-1]).trainer.strategy == "ddp"


def test_the_plan_lists_the_commands_without_running(tmp_path: Path, capsys) -> None:
    assert gpu_check.main(["--plan", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [name for name, _ in gpu_check.steps(tmp_path)]
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: gpu-check would run")
def test_without_a_gpu_it_says_so_and_succeeds(capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main(["--out", "unused"]) == 0
    assert "no CUDA device here; nothing to check" in capsys.readouterr().out


def test_a_step_that_hangs_is_stopped_with_the_processes_it_started() -> None:
    """A hung collective must not eat the GPU's time: the step is killed at its limit,
    with every process of its session (here a child that would outlive a plain kill)."""
    import sys
    import time

    started = time.perf_counter()
    code, output = gpu_check.run_step(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
         "print('started', flush=True); time.sleep(60)"], timeout=3)  # fmt: skip
    assert code is None and time.perf_counter() - started < 30
    assert "started" in output and "stopped after 3 s" in output
