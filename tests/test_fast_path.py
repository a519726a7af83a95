"""The device-resident data path, its DataLoader fallback, the memory layout, the benchmark."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from cnn_study.bench import training as bench
from cnn_study.callbacks.grad_monitor import first_conv
from cnn_study.data import in_memory
from cnn_study.data.fake import FakeDataModule
from cnn_study.data.loaders import DeviceBatches, EpochOrder
from cnn_study.errors import CnnStudyError
from cnn_study.numerics import SUBNORMAL_BITS, flush_denormals, is_subnormal
from cnn_study.train import build
from tests.conftest import NO_FIGURES, ComposeFn

QUICK = ("data=fake", "trainer=cpu", "trainer.max_epochs=1", "++trainer.limit_train_batches=3")


def epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_device_and_dataloader_paths_give_the_same_batches() -> None:
    fast = FakeDataModule(train_size=100, batch_size=32, placement="device", order_seed=5)
    ordinary = FakeDataModule(train_size=100, batch_size=32, placement="host", order_seed=5)
    fast.setup(), ordinary.setup()
    fast_loader, ordinary_loader = fast.train_dataloader(), ordinary.train_dataloader()
    assert isinstance(fast_loader, DeviceBatches)
    assert isinstance(ordinary_loader, DataLoader)
    for epoch in (0, 1):
        a, b = epoch_batches(fast_loader, epoch), epoch_batches(ordinary_loader, epoch)
        assert len(a) == len(b) == 4
        for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
            assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    first, second = epoch_batches(fast_loader, 0), epoch_batches(fast_loader, 1)
    assert not torch.equal(first[0][1], second[0][1])  # a new order every epoch
    evaluation = [labels for _, labels in fast.test_dataloader()]
    assert torch.equal(torch.cat(evaluation), fast.splits.test_labels)  # in order


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochOrder(50, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)
    assert sorted(order(1, 3)) == list(range(50))
    assert list(EpochOrder(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_both_paths_train_to_identical_weights(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    weights = []
    for placement in ("device", "host"):
        cfg = compose_cfg(
            *QUICK, *NO_FIGURES, f"data.placement={placement}", output_dir=tmp_path / placement
        )
        L.seed_everything(0)
        parts = build(cfg)
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
        assert parts.datamodule.uses_device_path() == (placement == "device")
        weights.append(parts.module.net.state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_lightning_sets_the_epoch_of_the_device_path(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg(*QUICK, *NO_FIGURES, "trainer.max_epochs=2", "data.placement=device")
    parts = build(cfg)
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert parts.trainer.train_dataloader.sampler.epoch == 1


def test_data_that_does_not_fit_falls_back_or_fails_by_name(monkeypatch) -> None:
    monkeypatch.setattr(in_memory, "fits_on_device", lambda num_bytes, device: False)
    auto = FakeDataModule(placement="auto")
    auto.setup()
    assert isinstance(auto.train_dataloader(), DataLoader)
    forced = FakeDataModule(placement="device")
    forced.setup()
    with pytest.raises(CnnStudyError, match=r"placement=device.*does not fit"):
        forced.train_dataloader()
    with pytest.raises(CnnStudyError, match=r"placement='gpu'.*'auto', 'device', 'host'"):
        FakeDataModule(placement="gpu")


def test_the_placement_is_decided_once_for_every_split(monkeypatch) -> None:
    """On a GPU the free memory shrinks once the splits are placed and while the allocator
    holds training memory: asked again at `trainer.test`, placement=device refused data
    that fitted before training. The first answer holds for every split."""
    answers = iter([True, False, False])
    monkeypatch.setattr(in_memory, "fits_on_device", lambda num_bytes, device: next(answers))
    forced = FakeDataModule(placement="device")
    forced.setup()
    loaders = [forced.train_dataloader(), forced.val_dataloader(), forced.test_dataloader()]
    assert all(isinstance(loader, DeviceBatches) for loader in loaders)


def test_cudnn_autotunes_unless_determinism_is_asked(
    compose_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs have the network's fixed size: cuDNN's benchmark picks the fastest kernels."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    build(compose_cfg(*QUICK, *NO_FIGURES))
    assert torch.backends.cudnn.benchmark is True
    build(compose_cfg(*QUICK, *NO_FIGURES, "trainer.deterministic=true"))
    assert torch.backends.cudnn.benchmark is False
    build(compose_cfg(*QUICK, *NO_FIGURES, "+trainer.benchmark=false"))
    assert torch.backends.cudnn.benchmark is False


def test_workers_take_the_dataloader_path() -> None:
    dm = FakeDataModule(num_workers=1)
    dm.setup()
    assert not dm.uses_device_path()


def test_channels_last_changes_the_layout_not_the_function(compose_cfg: ComposeFn, tmp_path):
    layouts = {}
    for option in ("true", "false"):
        overrides = (*QUICK, *NO_FIGURES, "arch=cnn3_bn", f"module.channels_last={option}")
        parts = build(compose_cfg(*overrides, output_dir=tmp_path / option))
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
        net = parts.module.net.eval()
        layouts[option] = first_conv(net).weight.is_contiguous(memory_format=torch.channels_last)
        inputs = parts.module.preprocess(parts.datamodule.splits.test_images[:16])
        assert inputs.is_contiguous(memory_format=torch.channels_last) == (option == "true")
        contiguous = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            torch.testing.assert_close(net(inputs), contiguous(inputs.contiguous()))
    assert layouts == {"true": True, "false": False}


def test_compiled_network_trains_and_checkpoints_plain_keys(compose_cfg: ComposeFn) -> None:
    parts = build(compose_cfg(*QUICK, *NO_FIGURES, "module.compile=true"))
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    assert parts.module.net._compiled_call_impl is not None  # what nn.Module.compile sets
    checkpoint = parts.trainer.checkpoint_callbacks[-1].best_model_path  # last.ckpt
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert "net.features.0.0.weight" in state
    assert not any("_orig_mod" in key for key in state)


def test_benchmark_runs_end_to_end_on_tiny_data(cifar_folder: Path, tmp_path: Path) -> None:
    report = bench.main(
        [
            "--data-root", str(cifar_folder), "--device", "cpu", "--epochs", "2",
            "--batches", "3", "--workers", "0", "--rounds", "2", "--out", str(tmp_path),
            "--layout", "contiguous", "data.val_size=16", "data.batch_size=8",
        ]
    )  # fmt: skip
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["variants"]) == {"lightning", "plain", "torchvision", "contiguous"}
    for timing in saved["variants"].values():
        assert timing["images_per_epoch"] == 24  # 3 batches of 8
        assert [len(epochs) for epochs in timing["rounds"]] == [2, 2]
        per_round = [24 / epochs[1] for epochs in timing["rounds"]]  # after the warm-up
        assert timing["images_per_s"] == pytest.approx(statistics.median(per_round))
        assert timing["images_per_s_range"] == pytest.approx([min(per_round), max(per_round)])
    a, b = (saved["variants"][name]["rounds"] for name in ("lightning", "plain"))
    per_round = [y[1] / x[1] for x, y in zip(a, b)]  # a/b in throughput = b/a in time
    assert saved["ratios"]["a/b"]["median"] == pytest.approx(statistics.median(per_round))
    assert saved["ratios"]["a/b"]["min"] == pytest.approx(min(per_round))
    overhead = [(x[1] - y[1]) / 24 * 8 * 1000 for x, y in zip(a, b)]  # ms per batch of 8
    assert saved["ratios"]["a − b, ms per step"]["median"] == pytest.approx(
        statistics.median(overhead)
    )
    contiguous = [x[1] / y[1] for x, y in zip(a, saved["variants"]["contiguous"]["rounds"])]
    assert saved["ratios"]["contiguous/a"]["max"] == pytest.approx(max(contiguous))
    assert set(saved["ratios"]) == {"a/b", "a/c", "a − b, ms per step", "contiguous/a"}
    assert saved["data_placement"] == "device"
    assert (tmp_path / "config.yaml").is_file()


def test_benchmark_takes_any_data_group_and_can_skip_variants(tmp_path: Path) -> None:
    report = bench.main(
        [
            "--epochs", "1", "--batches", "1", "--rounds", "1", "--workers", "0",
            "--skip", "plain", "--out", str(tmp_path), "data=fake",
        ]
    )  # fmt: skip
    assert set(report["variants"]) == {"lightning", "torchvision"}
    assert set(report["ratios"]) == {"a/c"}


def test_benchmark_times_a_late_training_state(cifar_folder: Path, tmp_path: Path, compose_cfg):
    """A checkpoint whose weights and Adam moments are partly subnormal (what weight decay
    leaves of dead units): IEEE arithmetic keeps them, flushing removes them."""
    flush_denormals(True)  # what any earlier run in this process leaves behind (the default)
    regularized = "regularization=a3/d04_wd1e-2"
    cfg = compose_cfg(f"data.root={cifar_folder}", regularized)
    net = instantiate(cfg.arch, num_classes=10)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    for parameter in net.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    with torch.no_grad():  # written as bits: a flushing thread turns a stored 2**-127 into 0
        for parameter in net.parameters():
            dead = torch.arange(parameter.numel()).view_as(parameter) % 3 == 0
            for tensor in (parameter, *optimizer.state[parameter].values()):
                if tensor.dim():
                    tensor.view(torch.int32)[dead] = SUBNORMAL_BITS
            assert is_subnormal(parameter).any()
    checkpoint = tmp_path / "late.ckpt"
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
         "optimizer_states": [optimizer.state_dict()]},
        checkpoint,
    )  # fmt: skip
    report = bench.main([
        "--data-root", str(cifar_folder), "--device", "cpu", "--out", str(tmp_path / "out"),
        "--late-from", str(checkpoint), "--late-steps", "2", "data.val_size=16",
        "data.batch_size=8", regularized,
    ])  # fmt: skip
    cases = report["late_training"]["cases"]
    assert set(cases) == {"fresh", "late, IEEE", "late, flushed"}
    assert cases["fresh"]["subnormals_before"] == 0
    assert cases["late, IEEE"]["subnormals_before"] > 0
    assert cases["late, flushed"]["subnormals_after"] == 0
    assert all(case["ms_per_step"] > 0 for case in cases.values())
    assert set(report["late_training"]["ratios"]) == {"late/fresh, IEEE", "late/fresh, flushed"}
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == json.loads(
        json.dumps(report)
    )
