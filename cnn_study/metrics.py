"""torchmetrics collections per stage.

"Accuracy" is micro-averaged (correct / total), as both studies report it; torchmetrics'
default for multiclass accuracy is macro, which scores absent classes as 0
(torchmetrics #1664). Precision, recall and F1 come support-weighted (the studies'
figures) and macro.
"""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

PER_CLASS_AUROC = "auroc_per_class"


def accuracy(num_classes: int) -> MulticlassAccuracy:
    """Micro accuracy: the fraction of correctly classified images."""
    return MulticlassAccuracy(num_classes=num_classes, average="micro")


def evaluation_metrics(num_classes: int) -> MetricCollection:
    """Final evaluation; expects class probabilities. `auroc_per_class` is one value per class."""
    return MetricCollection(
        {
            "acc": accuracy(num_classes),
            "precision": MulticlassPrecision(num_classes=num_classes, average="weighted"),
            "recall": MulticlassRecall(num_classes=num_classes, average="weighted"),
            "f1": MulticlassF1Score(num_classes=num_classes, average="weighted"),
            "precision_macro": MulticlassPrecision(num_classes=num_classes, average="macro"),
            "recall_macro": MulticlassRecall(num_classes=num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes=num_classes, average="macro"),
            PER_CLASS_AUROC: MulticlassAUROC(num_classes=num_classes, average=None),
        }
    )
