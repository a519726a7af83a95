"""The metric registry: every evaluation metric is one entry here, read by the module (what
it computes at test), results.json (what a run records), the report (its columns) and the
claim judge (which metrics a claim may name, each one's direction and range).

"Accuracy" is micro-averaged (correct / total), as both studies report it; torchmetrics'
default for multiclass accuracy is macro, which scores absent classes as 0
(torchmetrics #1664). Precision, recall and F1 come support-weighted (the studies'
figures) and macro. Calibration: the expected calibration error over 15 equal-width
confidence bins (torchmetrics' `MulticlassCalibrationError`, L1; Guo et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PER_CLASS_AUROC = "auroc_per_class"
CALIBRATION_BINS = 15


@dataclass(frozen=True)
class MetricSpec:
    """A test metric: the torchmetrics classification class that computes it and its
    arguments besides the class count (imported when built: reading the registry — the
    study file's checks, the report — costs no torch), and how it reads."""

    metric: str  # a class of torchmetrics.classification
    arguments: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    proportion: bool = True  # a value in [0, 1] (a difference of two in [-1, 1])
    reported: bool = True  # a column of the report's tables
    per_class: bool = False  # one value per class, logged as test/<name>/<class>

    def build(self, num_classes: int) -> Any:
        from torchmetrics import classification

        return getattr(classification, self.metric)(num_classes=num_classes, **self.arguments)


def accuracy(num_classes: int) -> Any:
    """Micro accuracy: the fraction of correctly classified images."""
    return EVALUATION["acc"].build(num_classes)


EVALUATION: dict[str, MetricSpec] = {
    "acc": MetricSpec("MulticlassAccuracy", {"average": "micro"}),
    "precision": MetricSpec("MulticlassPrecision", {"average": "weighted"}),
    "recall": MetricSpec("MulticlassRecall", {"average": "weighted"}),
    "f1": MetricSpec("MulticlassF1Score", {"average": "weighted"}),
    "precision_macro": MetricSpec("MulticlassPrecision", {"average": "macro"}, reported=False),
    "recall_macro": MetricSpec("MulticlassRecall", {"average": "macro"}, reported=False),
    "f1_macro": MetricSpec("MulticlassF1Score", {"average": "macro"}, reported=False),
    "auroc": MetricSpec("MulticlassAUROC", {"average": "macro"}),
    "ece": MetricSpec(
        "MulticlassCalibrationError",
        {"n_bins": CALIBRATION_BINS, "norm": "l1"},
        higher_is_better=False,
    ),
    PER_CLASS_AUROC: MetricSpec(
        "MulticlassAUROC", {"average": None}, reported=False, per_class=True
    ),
}

# What a run records besides the test metrics (results.json keys): name → higher is better.
TRAINING_RECORDS = {
    "test/loss": False,
    "train/acc": True,
    "train/loss": False,
    "val/acc": True,
    "val/loss": False,
    "best_val/acc": True,
}


def evaluation_metrics(num_classes: int) -> Any:
    """Every registered test metric, as a torchmetrics `MetricCollection`; expects class
    probabilities."""
    from torchmetrics import MetricCollection

    return MetricCollection({name: spec.build(num_classes) for name, spec in EVALUATION.items()})


def recorded_metrics() -> dict[str, bool]:
    """Every metric a run records in results.json, with whether higher is better."""
    tests = {f"test/{name}": spec.higher_is_better for name, spec in EVALUATION.items()
             if not spec.per_class}  # fmt: skip
    return tests | TRAINING_RECORDS


def report_columns() -> list[str]:
    """The test metrics the report's tables show, in registry order."""
    return [f"test/{name}" for name, spec in EVALUATION.items() if spec.reported]


def is_proportion(metric: str) -> bool:
    """Whether a recorded metric lies in [0, 1] (accuracies and the test metrics that do)."""
    name = metric.removeprefix("best_").split("/", 1)[-1]
    if metric.startswith(("train/", "val/", "best_val/")):
        return name == "acc"
    spec = EVALUATION.get(name)
    return spec is not None and spec.proportion and not spec.per_class
