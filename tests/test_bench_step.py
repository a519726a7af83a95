"""`python -m cnn_study.bench.step`: each part of a study takes timed training steps, with
its own network, freeze policy, batch and input size; CIFAR-10 parts get an epoch time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnn_study.bench import step


def test_every_part_is_timed_with_its_own_configuration(tmp_path: Path, capsys) -> None:
    study = {
        "title": "two parts",
        "parts": [
            {"name": "subset", "overrides": ["experiment=a1_baseline", "data.train_size=1000",
                                             "trainer.max_epochs=3"]},
            {"name": "frozen gap4", "overrides": ["data=fake", "arch=gap4", "arch.input_size=48",
                                                  "finetune=head", "data.batch_size=8"]},
        ],
    }  # fmt: skip
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    rows = step.measure([f"study={path}"], seconds=0.05)
    subset, frozen = rows
    assert subset["images_per_s"] > 0 and subset["batch"] == 128 and subset["input_px"] == 32
    assert subset["epoch_s"] == pytest.approx(1000 / subset["images_per_s"], abs=0.05)
    assert subset["job_min"] == pytest.approx(3 * subset["epoch_s"] / 60, abs=0.05)
    assert (frozen["input_px"], frozen["batch"], frozen["epoch_s"]) == (48, 8, None)
    assert "| frozen gap4 | 48 px | batch 8 |" in capsys.readouterr().out
    assert step.main(["study.scale=cpu"]) == 2  # no study named
