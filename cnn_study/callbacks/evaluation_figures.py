"""The studies' evaluation figures at test end: ROC curves, a reliability diagram,
confusion matrix, a prediction grid and the train/val curves (read back from TensorBoard's
own event files)."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAUROC, MulticlassConfusionMatrix, MulticlassROC

from cnn_study.callbacks.figure_output import publish_figure, seeded_sample
from cnn_study.figures import (
    confusion_figure,
    curves_figure,
    prediction_grid,
    reliability_figure,
    roc_figure,
)
from cnn_study.inputs import displayable
from cnn_study.metrics import CALIBRATION_BINS
from cnn_study.module import ImageClassifier

log = logging.getLogger(__name__)


class ReliabilityBins(Metric):
    """Per equal-width confidence bin: images, summed confidence, correct predictions —
    what a reliability diagram draws (summed across DDP ranks like any torchmetrics state).
    The bins are those of the registry's ECE (`test/ece`)."""

    def __init__(self, bins: int = CALIBRATION_BINS) -> None:
        super().__init__()
        self.bins = bins
        for name in ("counts", "confidence", "correct"):
            self.add_state(name, default=torch.zeros(bins, dtype=torch.float64),
                           dist_reduce_fx="sum")  # fmt: skip

    def update(self, probabilities: Tensor, labels: Tensor) -> None:
        confidence, predicted = probabilities.max(dim=-1)
        index = (confidence * self.bins).long().clamp(0, self.bins - 1)
        ones = torch.ones_like(confidence, dtype=torch.float64)
        self.counts.index_add_(0, index, ones)
        self.confidence.index_add_(0, index, confidence.double())
        self.correct.index_add_(0, index, (predicted == labels).double())

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.counts, self.confidence, self.correct


class EvaluationFigures(Callback):
    """ROC per class (AUC in the legend), confusion matrix (counts and row-normalised),
    `grid_size` seeded test images with true/predicted labels, loss/accuracy curves."""

    def __init__(self, grid_size: int = 16, seed: int = 0) -> None:
        self.grid_size = grid_size
        self.seed = seed
        self.metrics: MetricCollection | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        classes = len(pl_module.class_names)
        self.metrics = MetricCollection(
            {
                "roc": MulticlassROC(num_classes=classes),
                "auroc": MulticlassAUROC(num_classes=classes, average=None),
                "confusion": MulticlassConfusionMatrix(num_classes=classes),
                "reliability": ReliabilityBins(),
            }
        ).to(pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.metrics is not None and outputs is not None:
            self.metrics.update(outputs["probabilities"], outputs["labels"])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier) and self.metrics is not None
        names = pl_module.class_names
        values = self.metrics.compute()  # every rank: under DDP the states are gathered
        if not trainer.is_global_zero:  # one copy of each figure, drawn by rank 0
            self.metrics.reset()
            return
        fpr, tpr, _ = values["roc"]
        curves = [f.cpu().numpy() for f in fpr], [t.cpu().numpy() for t in tpr]
        auroc = values["auroc"].cpu().numpy()
        publish_figure(trainer, roc_figure(*curves, auroc, names), "test/roc")
        counts, confidence, correct = (v.cpu().numpy() for v in values["reliability"])
        ece = trainer.callback_metrics.get("test/ece")
        reliability = reliability_figure(counts, confidence, correct,
                                         float(ece) if ece is not None else None)  # fmt: skip
        publish_figure(trainer, reliability, "test/reliability")
        publish_figure(
            trainer, confusion_figure(values["confusion"].cpu().numpy(), names), "test/confusion"
        )
        self.metrics.reset()
        images, labels = seeded_sample(trainer.test_dataloaders, self.grid_size, self.seed)
        with torch.no_grad():
            inputs = pl_module.preprocess(images.to(pl_module.device))
            predictions = pl_module(inputs).argmax(dim=1).cpu()
        grid = prediction_grid(
            displayable(images, pl_module.input_spec),
            [names[i] for i in labels.tolist()],
            [names[i] for i in predictions.tolist()],
        )
        publish_figure(trainer, grid, "test/predictions")
        self._curves(trainer)

    def _curves(self, trainer: L.Trainer) -> None:
        board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if board is None:
            log.info("no TensorBoard logger: the loss/accuracy curves figure is skipped")
            return
        board.experiment.flush()
        events = EventAccumulator(board.log_dir)
        events.Reload()
        tags = set(events.Tags()["scalars"])
        scalars = {
            tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in ("train/loss", "val/loss", "train/acc", "val/acc")
            if tag in tags
        }
        publish_figure(trainer, curves_figure(scalars), "curves")
