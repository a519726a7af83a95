"""Evaluation figures render for 2 and for 100 classes without drowning in text."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_study.figures import confusion_figure, prediction_grid, roc_figure


@pytest.mark.parametrize("classes", [2, 100])
def test_figures_scale_with_the_class_count(classes: int, tmp_path) -> None:
    rng = np.random.default_rng(0)
    names = [f"class_{i:03d}" for i in range(classes)]
    grid = np.linspace(0, 1, 20)
    roc = roc_figure([grid] * classes, [np.sqrt(grid)] * classes, rng.random(classes), names)
    legend = roc.axes[0].get_legend()
    assert len(legend.get_texts()) == min(classes, 10)  # the 5 worst and 5 best beyond 20
    confusion = confusion_figure(rng.integers(0, 9, (classes, classes)), names)
    cell_texts = sum(len(ax.texts) for ax in confusion.axes)
    assert cell_texts == (2 * classes * classes if classes <= 20 else 0)
    width, height = confusion.get_size_inches()
    assert width <= 36 and height <= 18
    images = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    predicted = [names[(i + 1) % classes] if i % 4 == 0 else names[i % classes] for i in range(16)]
    truth = [names[i % classes] for i in range(16)]
    grid_figure = prediction_grid(images, truth, predicted)
    red = [ax for ax in grid_figure.axes if ax.title.get_color() == "red"]
    assert len(red) == 4  # the mistakes are marked
    for index, figure in enumerate((roc, confusion, grid_figure)):
        figure.savefig(tmp_path / f"{index}.png")
