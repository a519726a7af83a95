"""`make gpu-check`: the GPU day's script composes today (its commands are real configs)
and, without a GPU, says so and succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_study.bench import gpu_check
from tests.conftest import compose_run_config


def test_every_training_step_of_the_gpu_check_composes(tmp_path: Path) -> None:
    commands = dict(gpu_check.steps(tmp_path))
    assert list(commands) == ["a1", "bench", "stream", "ddp", "predict", "explain"]
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
