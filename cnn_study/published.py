"""The results the two origin studies published (STUDY.md): reference points to compare a
reproduction with, never results of cnn_study. Keyed by experiment and the overrides that
select the row within it; values are test accuracy (0-1), precision, recall, F1."""

from __future__ import annotations

PublishedRow = dict[str, float]


def _row(acc: float, precision: float, recall: float, f1: float) -> PublishedRow:
    return {"test/acc": acc / 100, "test/precision": precision, "test/recall": recall,
            "test/f1": f1}  # fmt: skip


PUBLISHED: dict[tuple[str, frozenset[str]], PublishedRow] = {
    ("a1_baseline", frozenset()): _row(73.79, 0.7429, 0.7379, 0.7389),
    ("a2_depth", frozenset({"arch=cnn2"})): _row(70.74, 0.7105, 0.7074, 0.7058),
    ("a2_depth", frozenset({"arch=cnn4"})): _row(74.22, 0.7494, 0.7422, 0.7424),
    ("a2_depth", frozenset({"arch=cnn5"})): _row(75.53, 0.7582, 0.7553, 0.7558),
    ("a3_regularization", frozenset({"regularization=a3/d05_wd1e-4"})): _row(76.67, 0.7739, 0.7667, 0.7684),
    ("a3_regularization", frozenset({"regularization=a3/d04_wd1e-3"})): _row(76.61, 0.7657, 0.7661, 0.7627),
    ("a3_regularization", frozenset({"regularization=a3/d04_wd1e-2"})): _row(67.45, 0.6776, 0.6745, 0.6743),
    ("a3_regularization", frozenset({"regularization=a3/d03_wd1e-3"})): _row(67.71, 0.6724, 0.6771, 0.6697),
    ("a4_batchnorm", frozenset()): _row(77.71, 0.7844, 0.7771, 0.7792),
    ("a5_linear", frozenset()): _row(45.55, 0.4637, 0.4555, 0.4482),
    ("a5_partial", frozenset()): _row(81.00, 0.8093, 0.8100, 0.8086),
    ("a6_augmentation", frozenset()): _row(75.38, 0.7560, 0.7538, 0.7537),
    ("a7_lr_schedule", frozenset({"scheduler=constant"})): _row(73.79, 0.7429, 0.7379, 0.7389),
    ("a7_lr_schedule", frozenset({"scheduler=step"})): _row(75.39, 0.7561, 0.7539, 0.7543),
    ("a7_lr_schedule", frozenset({"scheduler=cosine"})): _row(77.01, 0.7687, 0.7701, 0.7688),
    ("b2_gap4_slim", frozenset()): {"test/precision": 0.7635, "test/recall": 0.7503, "test/f1": 0.7424},
    ("b3_gap4_bn", frozenset()): _row(85.24, 0.8703, 0.8524, 0.8547),
    ("b4_last_conv", frozenset()): _row(77.14, 0.7880, 0.7714, 0.7724),
    ("b4b_three_classes", frozenset()): {"test/acc": 0.9721},
}  # fmt: skip


def published_results(overrides: list[str]) -> PublishedRow | None:
    """What the study published for a configuration given by its overrides, if anything."""
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    if experiment is None or any(o.startswith("data=") for o in overrides):
        return None  # not a study part, or the study's model on other data
    given = set(overrides)
    matches = [
        (len(selector), row)
        for (name, selector), row in PUBLISHED.items()
        if name == experiment and selector <= given
    ]
    return max(matches, key=lambda match: match[0])[1] if matches else None
