"""Test metrics against an independent NumPy computation on a fixed example."""

from __future__ import annotations

import numpy as np
import torch

from cnn_study.metrics import PER_CLASS_AUROC, evaluation_metrics

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
SCORES = np.array(
    [
        [0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4],
        [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1],
        [0.1, 0.1, 0.8], [0.3, 0.1, 0.6], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.3, 0.6],
    ]
)  # fmt: skip


def reference_scores(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | np.ndarray]:
    classes = scores.shape[1]
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((classes, classes))
    for truth, guess in zip(labels, predicted):
        confusion[truth, guess] += 1
    tp = np.diag(confusion)
    precision = tp / confusion.sum(axis=0)
    recall = tp / confusion.sum(axis=1)
    f1 = 2 * precision * recall / (precision + recall)
    support = confusion.sum(axis=1) / confusion.sum()
    auroc = []
    for c in range(classes):  # Mann-Whitney: P(score of a positive > score of a negative)
        pos, neg = scores[labels == c, c], scores[labels != c, c]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        auroc.append(wins / (len(pos) * len(neg)))
    # ECE: 15 equal-width confidence bins [k/15, (k+1)/15), Σ share × |accuracy − confidence|
    confidence = scores.max(axis=1)
    bins = np.minimum((confidence * 15).astype(int), 14)
    right = predicted == labels
    ece = sum(np.mean(bins == b) * abs(right[bins == b].mean() - confidence[bins == b].mean())
              for b in np.unique(bins))  # fmt: skip
    return {
        "acc": tp.sum() / len(labels),
        "precision": (precision * support).sum(),
        "recall": (recall * support).sum(),
        "f1": (f1 * support).sum(),
        "precision_macro": precision.mean(),
        "recall_macro": recall.mean(),
        "f1_macro": f1.mean(),
        "auroc": np.mean(auroc),
        "ece": ece,
        PER_CLASS_AUROC: np.array(auroc),
    }


def test_metrics_match_independent_computation() -> None:
    collection = evaluation_metrics(num_classes=3)
    half = len(LABELS) // 2  # two batches, as a test loop would feed them
    for part in (slice(None, half), slice(half, None)):
        collection.update(torch.tensor(SCORES[part]), torch.tensor(LABELS[part]))
    values = {k: v.numpy() for k, v in collection.compute().items()}
    expected = reference_scores(LABELS, SCORES)
    assert set(values) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(values[name], value, rtol=1e-5, err_msg=name)
    # Micro accuracy equals weighted recall and differs from macro recall here.
    assert abs(expected["acc"] - expected["recall_macro"]) > 0.01
