"""`ImageClassifier`: the one LightningModule of cnn_study.

It owns the input pipeline (uint8 → float → resize → [augment] → normalise) so batches
stay uint8 until they reach the training device, and a checkpoint carries everything
needed to classify raw images (input size, mean/std, class names, the run's config).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cnn_study.errors import CnnStudyError, DivergedError
from cnn_study.finetune import classifier_layer
from cnn_study.metrics import PER_CLASS_AUROC, accuracy, evaluation_metrics

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


RNG_KEY = "cnn_study_rng_states"


def rng_states() -> dict[str, Any]:
    """The global random states a training step draws from (torch, CUDA, numpy, python)."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # As tensors and plain types, so that `torch.load(weights_only=True)` accepts it.
        "numpy": [
            torch.from_numpy(part) if isinstance(part, np.ndarray) else part
            for part in np.random.get_state()
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` captured."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(
        tuple(part.numpy() if isinstance(part, Tensor) else part for part in states["numpy"])
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ImageClassifier(L.LightningModule):
    """Cross-entropy classification of uint8 image batches with any `nn.Module` network."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None,
        scheduler: SchedulerFactory | None = None,
        augmentation: nn.Module | None = None,
        input_size: int | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
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
            ignore=["net", "optimizer", "scheduler", "augmentation"], logger=False
        )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.augmentation = augmentation if augmentation is not None else nn.Identity()
        self.input_size = input_size
        self.backbone_lr_scale = backbone_lr_scale
        self.use_channels_last = channels_last
        self.compile_network = compile
        self._compiled = False
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        # Set on the device by any non-finite training loss; read once per epoch (no step sync).
        self.register_buffer("nonfinite_loss", torch.zeros((), dtype=torch.bool), persistent=False)
        self._guarded_epoch = -1

        num_classes = len(class_names)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc, self.val_acc = accuracy(num_classes), accuracy(num_classes)
        self.test_metrics = evaluation_metrics(num_classes)

    def train(self, mode: bool = True) -> ImageClassifier:
        """Like `nn.Module.train`, but BatchNorm layers with frozen parameters stay in eval
        mode, so a frozen backbone's running statistics do not drift."""
        super().train(mode)
        for layer in self.net.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in layer.parameters()
            ):
                layer.eval()
        return self

    def configure_model(self) -> None:
        # Lightning calls this before every fit/test, and when loading a checkpoint.
        if self.use_channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_network and not self._compiled:
            # In place: the state_dict keys, hence checkpoints, stay those of the network.
            self.net.compile()
            self._compiled = True

    def on_train_epoch_start(self) -> None:
        # Lightning does not call train() itself (it restores each submodule's flag after
        # validation), so apply the frozen-BatchNorm rule here, before every epoch.
        self.train()

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams["class_names"])

    def preprocess(self, images: Tensor, train: bool = False) -> Tensor:
        """uint8 N×3×H×W → normalised float at the network's input size (augmented if train)."""
        x = images.float() / 255.0
        size = self.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        if train:
            x = self.augmentation(x)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.use_channels_last else x

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits for preprocessed (normalised float) inputs."""
        return self.net(inputs)

    def _shared_step(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self(self.preprocess(images, train=train))
        return F.cross_entropy(logits, labels), logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits = self._shared_step(batch, train=True)
        labels = batch[1]
        self.nonfinite_loss |= ~torch.isfinite(loss.detach())
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(logits.detach(), labels)
        # Epoch aggregates only: per-step logging forces a device sync (Lightning #20995).
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _stop_if_diverged(self, across_processes: bool = True) -> None:
        """The NaN guard: raise before the checkpoint callbacks can save this epoch's weights."""
        self._guarded_epoch = self.current_epoch
        diverged = bool(self.nonfinite_loss)
        if across_processes:  # every DDP rank must stop, not only the one that saw it
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise DivergedError(
                f"the training loss became NaN or infinite in epoch {self.current_epoch}; "
                "the checkpoints hold the last finite epochs (try a lower optimizer.lr)"
            )

    def on_validation_epoch_start(self) -> None:
        # Before validation, hence before ModelCheckpoint saves in `on_validation_end`; all
        # DDP ranks reach this hook in step, so the decision can be shared.
        if not self.trainer.sanity_checking:
            self._stop_if_diverged()

    def on_train_epoch_end(self) -> None:
        # Epochs without validation: checkpoint callbacks save after this hook. Rank 0's
        # progress bar syncs metrics just before it, so no collective here (DDP).
        if self._guarded_epoch != self.current_epoch:
            self._stop_if_diverged(across_processes=False)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits = self._shared_step(batch, train=False)
        labels = batch[1]
        self.val_loss.update(loss, weight=len(labels))
        self.val_acc.update(logits, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, logits = self._shared_step(batch, train=False)
        labels = batch[1]
        probabilities = logits.float().softmax(dim=-1)
        self.test_loss.update(loss, weight=len(labels))
        self.test_metrics.update(probabilities, labels)
        return {"probabilities": probabilities, "labels": labels}  # for figure callbacks

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        per_class = values.pop(PER_CLASS_AUROC)
        self.log("test/loss", self.test_loss.compute())
        self.log_dict({f"test/{name}": value for name, value in values.items()})
        self.log_dict(
            {f"test/auroc/{name}": value for name, value in zip(self.class_names, per_class)}
        )
        self.test_metrics.reset()
        self.test_loss.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning's checkpoints hold no RNG state; augmentation and dropout draw from it.
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        if RNG_KEY in checkpoint and trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            set_rng_states(checkpoint[RNG_KEY])  # only when resuming training, never on load

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters only; the backbone's at `backbone_lr_scale` × the head's lr."""
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        if self.backbone_lr_scale == 1.0:
            return [{"params": trainable}]
        head_ids = {id(p) for p in classifier_layer(self.net).parameters()}
        head = [p for p in trainable if id(p) in head_ids]
        backbone = [p for p in trainable if id(p) not in head_ids]
        if self.optimizer_factory is None or not backbone:
            return [{"params": head}]
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if base_lr is None:
            raise CnnStudyError("module.backbone_lr_scale needs an optimizer with an explicit lr")
        return [{"params": head}, {"params": backbone, "lr": base_lr * self.backbone_lr_scale}]

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(
                "this ImageClassifier was built without an optimizer (inference only)"
            )
        optimizer = self.optimizer_factory(self.parameter_groups())
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
    if "run_config" not in hparams or "class_names" not in hparams:
        raise CnnStudyError(
            f"checkpoint {path}: not a cnn_study checkpoint (no run config and class names; "
            "use a run's checkpoints/best-*.ckpt or last.ckpt)"
        )
    net = instantiate(hparams["run_config"]["arch"], num_classes=len(hparams["class_names"]))
    model = ImageClassifier.load_from_checkpoint(
        path, map_location=map_location, net=net, optimizer=None
    )
    return model.eval()
