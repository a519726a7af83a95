"""`ImageClassifier`: the one LightningModule of cnn_study — its steps, metrics and
optimizer; the input pipeline is `cnn_study.inputs.Preprocess`, and the RNG state, the NaN
guard and the frozen-BatchNorm rule are callbacks (`cnn_study.callbacks.safeguards`).

The recipe's parts come in as objects: the training loss (`loss`: torch's cross-entropy,
with label smoothing), batch mixing of the train split (`mixing`: MixUp/CutMix, soft
targets) and the test-time views (`tta`). Validation and test losses are the plain
cross-entropy, so every part of a study reports the same quantity. Under mixing, training
accuracy counts a prediction right when it names the class with the larger share of the
mixed image (the argmax of its soft target).

Batches stay uint8 until they reach the training device, and a checkpoint carries
everything needed to classify raw images (input spec, class names, the run's config).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassStatScores

from cnn_study.errors import CnnStudyError
from cnn_study.finetune import classifier_layer
from cnn_study.inputs import InputSpec, Preprocess, checkpoint_input
from cnn_study.metrics import PER_CLASS_AUROC, accuracy, evaluation_metrics

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
log = logging.getLogger(__name__)
DEFAULT_INPUT = {"size": None, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


class ImageClassifier(L.LightningModule):
    """Cross-entropy classification of uint8 image batches with any `nn.Module` network."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None = None,
        augmentation: nn.Module | None = None,
        loss: nn.Module | None = None,
        mixing: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        tta: Callable[[Tensor], list[Tensor]] | None = None,
        input_spec: Mapping[str, Any] | None = None,
        class_names: Sequence[str] = (),
        backbone_lr_scale: float = 1.0,
        channels_last: bool = True,
        compile: bool = False,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"need at least two class names, got {list(class_names)}")
        # Objects are not hyperparameters: the run's resolved config rebuilds them
        # (see `load_classifier`), so a checkpoint loads without the original Python objects.
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "augmentation", "loss", "mixing", "tta"],
            logger=False,
        )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.augmentation = augmentation if augmentation is not None else nn.Identity()
        self.criterion = loss if loss is not None else nn.CrossEntropyLoss()
        self.mixing = mixing
        self.tta = tta
        # Without a spec (tests, hand-built modules): as stored, pixels scaled to [-1, 1].
        self.input_spec = InputSpec.from_dict(input_spec or DEFAULT_INPUT)
        self.input_pipeline = Preprocess(self.input_spec, channels_last)
        if self.input_spec.size is not None:  # lets the model summary count real FLOPs
            channels = len(self.input_spec.mean or ())
            self.example_input_array = torch.zeros(1, channels, *(self.input_spec.size,) * 2)
        self.backbone_lr_scale = backbone_lr_scale
        self.use_channels_last = channels_last
        self.compile_network = compile
        self._compiled = False

        num_classes = len(class_names)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc, self.val_acc = accuracy(num_classes), accuracy(num_classes)
        self.test_metrics = evaluation_metrics(num_classes)
        # Test images per class: per-class figures only for the classes the split holds.
        self.test_support = MulticlassStatScores(num_classes=num_classes, average=None)
        # (labels, probabilities) of every test batch, in the test set's order: a run keeps
        # its test predictions (`cnn_study.study.predictions`); single process only.
        self._test_batches: list[tuple[Tensor, Tensor]] = []
        self.test_predictions: tuple[Tensor, Tensor] | None = None

    def configure_model(self) -> None:
        # Lightning calls this before every fit/test, and when loading a checkpoint.
        if self.use_channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_network and not self._compiled:
            # In place: the state_dict keys, hence checkpoints, stay those of the network.
            self.net.compile()
            self._compiled = True

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams["class_names"])

    def preprocess(self, images: Tensor, train: bool = False) -> Tensor:
        """uint8 N×3×H×W → the network's input (augmented when `train`)."""
        return self.input_pipeline(images, self.augmentation if train else None)

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits for preprocessed (normalised float) inputs."""
        return self.net(inputs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        inputs, targets = self.preprocess(images, train=True), labels
        if self.mixing is not None:
            inputs, targets = self.mixing(inputs, labels)
            if self.use_channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = self(inputs)
        loss = self.criterion(logits, targets)
        self.train_loss.update(loss.detach(), weight=len(labels))
        dominant = targets.argmax(dim=-1) if targets.is_floating_point() else targets
        self.train_acc.update(logits.detach(), dominant)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(self.preprocess(images))
        loss = F.cross_entropy(logits, labels)
        self.val_loss.update(loss, weight=len(labels))
        self.val_acc.update(logits, labels)

    # Epoch aggregates, logged once an epoch from the metrics' own state (synced across DDP
    # ranks by `compute`). `self.log(name, metric)` in every step cost ≈ 3 ms a call on the
    # CPU: Lightning moves the logged Metric to the batch's device on each call
    # (`_ResultCollection.log` → `_ResultMetric.to`), 10 % of a cnn3 step.
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_loss, self.train_acc)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_acc)

    def _log_epoch(self, stage: str, loss: MeanMetric, accuracy: Metric) -> None:
        if loss.update_count == 0:  # e.g. an epoch that stopped before its first step
            return
        self.log_dict(
            {f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()}, prog_bar=True
        )
        loss.reset()
        accuracy.reset()

    def probabilities(self, images: Tensor) -> Tensor:
        """Class probabilities of uint8 images: the mean over the test-time views (`tta`),
        else the plain view's softmax."""
        inputs = self.preprocess(images)
        views = self.tta(inputs) if self.tta is not None else [inputs]
        return torch.stack([self(view).float().softmax(dim=-1) for view in views]).mean(0)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        probabilities = self.probabilities(images)
        loss = F.nll_loss(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log(),
                          labels)  # fmt: skip
        self.test_loss.update(loss, weight=len(labels))
        self.test_metrics.update(probabilities, labels)
        self.test_support.update(probabilities, labels)
        if self.trainer.world_size == 1:
            self._test_batches.append((labels.detach(), probabilities.detach()))
        return {"probabilities": probabilities, "labels": labels}  # for figure callbacks

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        per_class = values.pop(PER_CLASS_AUROC)
        present = self.test_support.compute()[:, 4] > 0  # tp, fp, tn, fn, support
        if not bool(present.all()):  # a class without a test image has no AUROC at all
            absent = [n for n, here in zip(self.class_names, present.tolist()) if not here]
            log.warning("the test split holds no image of %s: no AUROC for it, and the "
                        "macro AUROC averages the classes it holds", ", ".join(absent))  # fmt: skip
            values["auroc"] = per_class[present].mean()
        self.log("test/loss", self.test_loss.compute())
        self.log_dict({f"test/{name}": value for name, value in values.items()})
        self.log_dict({f"test/auroc/{name}": value for name, value, here
                       in zip(self.class_names, per_class, present.tolist()) if here})  # fmt: skip
        self.test_metrics.reset()
        self.test_support.reset()
        self.test_loss.reset()
        if self._test_batches:
            labels, probabilities = zip(*self._test_batches)
            self.test_predictions = (torch.cat(labels).cpu(), torch.cat(probabilities).cpu())
            self._test_batches = []

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters only; with `backbone_lr_scale` ≠ 1, the backbone's in a group
        whose `lr_scale` multiplies the optimizer's lr (see `configure_optimizers`)."""
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        if self.backbone_lr_scale == 1.0:
            return [{"params": trainable}]
        head_ids = {id(p) for p in classifier_layer(self.net).parameters()}
        head = [p for p in trainable if id(p) in head_ids]
        backbone = [p for p in trainable if id(p) not in head_ids]
        groups = [{"params": head}]
        if backbone:
            groups.append({"params": backbone, "lr_scale": self.backbone_lr_scale})
        return groups

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(
                "this ImageClassifier was built without an optimizer (inference only)"
            )
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:  # before the scheduler records initial lrs
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "name": "lr"},
        }


def load_classifier(checkpoint_path: str | Path, map_location: str = "cpu") -> ImageClassifier:
    """Rebuild a trained classifier from a cnn_study checkpoint alone (for inference)."""
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise CnnStudyError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # pickle, zip and torch errors alike
        raise CnnStudyError(f"checkpoint {path}: not a readable checkpoint ({error})") from error
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    spec = checkpoint_input(checkpoint)
    if "run_config" not in hparams or "class_names" not in hparams or spec is None:
        raise CnnStudyError(
            f"checkpoint {path}: not a cnn_study checkpoint (no run config and class names; "
            "use a run's checkpoints/best-*.ckpt or last.ckpt)"
        )
    arch = dict(hparams["run_config"]["arch"])
    if "weights" in arch:  # the checkpoint holds every weight: no download, no start file
        arch["weights"] = "none"
    net = instantiate(arch, num_classes=len(hparams["class_names"]))
    tta = hparams["run_config"].get("tta")  # the run's test-time views (older runs: none)
    model = ImageClassifier(
        net,
        optimizer=None,
        tta=instantiate(tta) if tta else None,
        input_spec=spec.as_dict(),
        class_names=hparams["class_names"],
        channels_last=hparams.get("channels_last", True),
        run_config=hparams["run_config"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    model.configure_model()
    return model.eval()
