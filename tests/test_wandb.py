"""logger=wandb: a new logger is one YAML and one module (`cnn_study/loggers/wandb.py`);
offline, it writes the run's scalars, figures, config and test metrics to the run's own
folder with no account and no network, read back here from W&B's offline files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnn_study import schema
from cnn_study.errors import CnnStudyError
from cnn_study.loggers import LoggerOutput, output_for
from cnn_study.train import run
from tests.conftest import ComposeFn


def records(path: Path) -> list[Any]:
    """The records of a W&B transaction log (`run-*.wandb`, LevelDB's log format: a 7-byte
    file header, then records in 32 KiB blocks, each chunk with a 7-byte header of
    checksum, length and kind), parsed with W&B's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2

    data, position, block, payload, found = path.read_bytes(), 7, 32768, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header: padding
            position += block - position % block
            continue
        length, kind = (
            int.from_bytes(data[position + 4 : position + 6], "little"),
            data[position + 6],
        )
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            found.append(record)
            payload = b""
    return found


def key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_keeps_scalars_figures_config_and_metrics(
    compose_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg("data=fake", "logger=[tensorboard,wandb]", "trainer.max_epochs=2",
                      "~callbacks.gradcam")  # fmt: skip
    results = run(cfg)
    (offline,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    kinds: dict[str, list[Any]] = {}
    for record in records(log):
        kinds.setdefault(record.WhichOneof("record_type"), []).append(record)
    history = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in kinds["history"]]
    val_acc = [point["val/acc"] for point in history if "val/acc" in point]
    assert len(val_acc) == 2  # one point per epoch
    assert val_acc[-1] == pytest.approx(results["val/acc"])
    (config,) = kinds["config"]
    arch = next(json.loads(i.value_json) for i in config.config.update if key(i) == "arch")
    assert arch["_target_"] == "cnn_study.models.cnn.build_cnn"
    summary = {key(i): i.value_json for r in kinds["summary"] for i in r.summary.update}
    assert json.loads(summary["test/acc"]) == pytest.approx(results["test/acc"])
    images = offline / "files" / "media" / "images"
    assert any(images.rglob("reliability*.png")) and any(images.rglob("curves*.png"))


def test_every_logger_module_names_its_class_and_a_new_one_is_found(tmp_path: Path) -> None:
    from cnn_study.loggers import outputs

    assert set(outputs()) == {
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.MLFlowLogger",
        "lightning.pytorch.loggers.WandbLogger",
    }
    from lightning.pytorch.loggers import CSVLogger

    plain = output_for(CSVLogger(tmp_path))  # no module: the default output
    assert type(plain) is LoggerOutput


def test_wandb_missing_names_the_extra(compose_cfg: ComposeFn, monkeypatch) -> None:
    real = schema.importlib.util.find_spec
    monkeypatch.setattr(schema.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))  # fmt: skip
    with pytest.raises(CnnStudyError, match=r"pip install 'cnn_study\[wandb\]'"):
        run(compose_cfg("data=fake", "logger=wandb", "debug=limit"))
