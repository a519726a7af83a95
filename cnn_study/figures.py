"""Matplotlib figures of a test run, legible with 2 or 100 classes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, no window, any backend

MANY_CLASSES = 20  # above this, per-class text gives way to colour alone


def _title(true_name: str, predicted_name: str) -> tuple[str, str]:
    text = f"true: {true_name}\npred: {predicted_name}"
    return text, ("black" if true_name == predicted_name else "red")


def gradcam_figure(
    images: np.ndarray,
    maps: np.ndarray,
    true_names: Sequence[str] | None,
    predicted: Sequence[str],
) -> Figure:
    """One row per image: image | Grad-CAM heat map | overlay; uint8 N×H×W×3, maps N×H×W.

    Without `true_names` (a user's own images) the titles give the prediction only.
    """
    rows = len(images)
    fig = Figure(figsize=(7.5, 2.5 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, (image, heat) in enumerate(zip(images, maps)):
        if true_names is None:
            text, colour = f"pred: {predicted[row]}", "black"
        else:
            text, colour = _title(true_names[row], predicted[row])
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(text, fontsize=9, color=colour)
        axes[row, 1].imshow(heat, cmap="jet", vmin=0, vmax=1)
        axes[row, 1].set_title("Grad-CAM", fontsize=9)
        axes[row, 2].imshow(image)
        axes[row, 2].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[row, 2].set_title("overlay", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def roc_figure(
    fpr: Sequence[np.ndarray], tpr: Sequence[np.ndarray], auc: np.ndarray, names: Sequence[str]
) -> Figure:
    """One-vs-rest ROC per class; the legend names every class, or the 5 best and worst."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    order = np.argsort(auc)
    labelled = set(order[:5]) | set(order[-5:]) if len(names) > MANY_CLASSES else set(order)
    colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "viridis"]
    for index in range(len(names)):
        label = f"{names[index]} (AUC {auc[index]:.3f})" if index in labelled else None
        colour = colours(index if len(names) <= 10 else index / max(1, len(names) - 1))
        ax.plot(fpr[index], tpr[index], lw=1.2 if label else 0.5, color=colour, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    title = f"ROC, one vs rest (macro AUC {float(np.mean(auc)):.3f})"
    if len(names) > MANY_CLASSES:
        title += "\nlegend: the 5 lowest and 5 highest AUCs"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def reliability_figure(
    counts: np.ndarray, confidence: np.ndarray, correct: np.ndarray, ece: float | None
) -> Figure:
    """Reliability diagram: per confidence bin, the accuracy against the mean confidence
    (the diagonal is perfect calibration), and how many test images fall in each bin."""
    bins = len(counts)
    edges = np.linspace(0, 1, bins + 1)
    filled = counts > 0
    accuracy = np.divide(correct, counts, out=np.zeros(bins), where=filled)
    mean_confidence = np.divide(confidence, counts, out=np.zeros(bins), where=filled)
    fig = Figure(figsize=(6.5, 6))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = edges[1] - edges[0]
    top.bar(edges[:-1][filled], accuracy[filled], width=width, align="edge",
            edgecolor="black", color="tab:blue", label="accuracy")  # fmt: skip
    gap = (mean_confidence - accuracy)[filled]
    top.bar(edges[:-1][filled], gap, bottom=accuracy[filled], width=width, align="edge",
            color="tab:red", alpha=0.3, label="gap to confidence")  # fmt: skip
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    title = "reliability" + (f" (ECE {ece:.4f}, {bins} bins)" if ece is not None else "")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(edges[:-1], counts, width=width, align="edge", color="grey")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="images")
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    """Confusion matrix as counts and row-normalised (recall per true class)."""
    count = len(names)
    size = min(18.0, 4.0 + 0.35 * count)
    fig = Figure(figsize=(2 * size, size))
    axes = fig.subplots(1, 2)
    normalised = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    for ax, values, title in ((axes[0], matrix, "counts"), (axes[1], normalised, "row-normalised")):
        ax.imshow(values, cmap="Blues")
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if count <= 40:
            ax.set_xticks(range(count), names, rotation=90, fontsize=8)
            ax.set_yticks(range(count), names, fontsize=8)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if count <= MANY_CLASSES:
            peak = values.max() if values.max() > 0 else 1
            for (i, j), value in np.ndenumerate(values):
                text = f"{int(value)}" if values is matrix else f"{value:.2f}"
                colour = "white" if value > 0.6 * peak else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return fig


def prediction_grid(
    images: np.ndarray, true_names: Sequence[str], predicted: Sequence[str]
) -> Figure:
    """Test images with true and predicted class; mistakes titled in red."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(2.2 * columns, 2.5 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true_name, predicted_name in zip(axes.flat, images, true_names, predicted):
        text, colour = _title(true_name, predicted_name)
        ax.imshow(image)
        ax.set_title(("✗ " if colour == "red" else "") + text, fontsize=8, color=colour)
    fig.tight_layout()
    return fig


def curves_figure(scalars: dict[str, list[tuple[int, float]]]) -> Figure:
    """Train/val loss and accuracy per epoch, like the studies' plots."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, quantity in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            points = scalars.get(f"{split}/{quantity}", [])
            if points:
                epochs = np.arange(1, len(points) + 1)
                ax.plot(epochs, [value for _, value in points], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel="accuracy" if quantity == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def val_curves_figure(curves: dict[str, dict[str, list[list[float]]]]) -> Figure:
    """Validation accuracy and loss per epoch, one line per configuration (mean over seeds)."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, tag in zip(axes, ("val/acc", "val/loss")):
        for name, per_tag in curves.items():
            repeats = [c for c in per_tag.get(tag, []) if c]
            if not repeats:
                continue
            length = min(len(c) for c in repeats)
            mean = np.mean([c[:length] for c in repeats], axis=0)
            ax.plot(np.arange(1, length + 1), mean, marker="o", ms=3, label=name[:60])
        ax.set(xlabel="epoch", ylabel=tag)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def part_figure(
    title: str,
    points: Sequence[tuple[str, float | None, float | None, float | None, float | None]],
    curves: dict[str, list[list[float]]],
) -> Figure:
    """One study part: our test accuracy (mean and 95 % interval over seeds) beside the
    study's figure, and validation accuracy per epoch (mean over seeds, band min–max).

    `points`: (name, our mean, interval low, interval high, study figure), in percent.
    """
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    positions = np.arange(len(points))
    for x, (_, mean, low, high, study) in zip(positions, points):
        if mean is not None:
            error = [[mean - low], [high - mean]] if low is not None and high is not None else None
            left.errorbar(x - 0.1, mean, yerr=error, fmt="o", color="tab:blue", capsize=4)
        if study is not None:
            left.plot(x + 0.1, study, marker="D", color="tab:orange", linestyle="none")
    left.plot([], [], "o", color="tab:blue", label="cnn_study: mean, 95 % CI")
    left.plot([], [], "D", color="tab:orange", label="study (one run)")
    left.set_xticks(positions, [name for name, *_ in points], rotation=20, ha="right", fontsize=8)
    left.set(ylabel="test accuracy (%)", title=title)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    for name, repeats in curves.items():
        repeats = [c for c in repeats if c]
        if not repeats:
            continue
        length = min(len(c) for c in repeats)
        values = np.array([c[:length] for c in repeats]) * 100
        epochs = np.arange(1, length + 1)
        (line,) = right.plot(epochs, values.mean(axis=0), marker="o", ms=3, label=name)
        if len(repeats) > 1:
            right.fill_between(
                epochs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2
            )
    right.set(
        xlabel="epoch", ylabel="validation accuracy (%)", title="mean over seeds, band min–max"
    )
    right.grid(alpha=0.3)
    if right.lines:
        right.legend(fontsize=7)
    fig.tight_layout()
    return fig
