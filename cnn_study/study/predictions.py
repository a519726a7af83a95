"""Evidence per test image: what two runs disagree on.

A run saves `test_predictions.npz` beside its results.json (`cnn_study.rundir`: the true
label, the predicted label and the class probabilities, float16, of every test image, in
the test set's order). Two runs on the same test set are compared image by image:
- **churn**: the share of test images whose correctness flips between the two;
- **McNemar's exact test**: under "both are equally accurate", the images that only one
  run gets right are a fair coin's tosses; the one-sided binomial p-value of the split in
  the claimed direction (McNemar 1947; the exact form as in Edwards 1948 / Fagerland et
  al. 2013), shown with the side the split favours. With one seed of each, this is far
  tighter than comparing seed means, but it speaks for those two trained networks, not
  for the training recipe: the report shows it as description, never as a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ImageComparison:
    """Run a against run b on the same test images."""

    images: int
    only_a_right: int  # a correct, b wrong
    only_b_right: int  # a wrong, b correct

    @property
    def churn(self) -> float:
        return (self.only_a_right + self.only_b_right) / self.images if self.images else 0.0

    @property
    def mcnemar_p(self) -> float:
        """Exact two-sided McNemar p-value (1.0 when no image flips)."""
        flips = self.only_a_right + self.only_b_right
        if flips == 0:
            return 1.0
        return float(stats.binomtest(self.only_a_right, flips, 0.5).pvalue)

    @property
    def a_better_p(self) -> float:
        """Exact one-sided McNemar p-value of "a is more accurate than b"."""
        flips = self.only_a_right + self.only_b_right
        if flips == 0:
            return 1.0
        return float(stats.binomtest(self.only_a_right, flips, 0.5, alternative="greater").pvalue)

    def text(self, a: str = "a", b: str = "b") -> str:
        """'favours a (912 vs 764 images only it gets right), churn …, one-sided exact
        McNemar p (a better) = …' — the side the split favours, then the claimed side's p."""
        if self.only_a_right == self.only_b_right:
            favours = f"favours neither ({self.only_a_right} images only each gets right)"
        else:
            ahead, behind = (a, b) if self.only_a_right > self.only_b_right else (b, a)
            counts = sorted((self.only_a_right, self.only_b_right), reverse=True)
            favours = (f"favours {ahead} ({counts[0]} images only {ahead} gets right, "
                       f"{counts[1]} only {behind})")  # fmt: skip
        return (
            f"{favours}; churn {self.churn * 100:.1f} % of {self.images} images; one-sided "
            f"exact McNemar p ({a} better) = {self.a_better_p:.2g}"
        )


def compare(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> ImageComparison:
    """Compare two runs' (targets, correct) on the same test images."""
    (target_a, right_a), (target_b, right_b) = a, b
    if target_a.shape != target_b.shape or not np.array_equal(target_a, target_b):
        raise ValueError("the two runs were tested on different images")
    return ImageComparison(
        images=int(target_a.size),
        only_a_right=int(np.sum(right_a & ~right_b)),
        only_b_right=int(np.sum(~right_a & right_b)),
    )
