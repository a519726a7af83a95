"""From repeated runs to evidence: intervals, differences paired by seed, claim verdicts.

A configuration's mean over seeds gets a 95 % Student-t confidence interval. A study part
is compared with its baseline seed by seed (the same seed shares initialisation and data
order, so the difference removes most of the seed-to-seed spread), and each claim the two
studies make (STUDY.md) is judged from those differences: "supported" when every interval
lies on the claimed side of zero, "contradicted" when one lies on the other side, "not
resolved" when an interval includes zero or only one seed is paired, "not run" when a part
it needs has no completed run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy import stats

CONFIDENCE = 0.95
CLAIM_METRIC = "test/acc"  # the studies' accuracy: micro, as they report it

Verdict = Literal["supported", "contradicted", "not resolved", "not run"]


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` values with their std and 95 % t interval (both None when n == 1)."""

    n: int
    mean: float
    std: float | None = None
    low: float | None = None
    high: float | None = None

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """'74.12 [73.05, 75.19] (n=3)', or '74.12 (n=1, no interval)'."""
        mean = f"{self.mean * scale:.{digits}f}"
        if self.low is None or self.high is None:
            return f"{mean} (n={self.n}, no interval)"
        low, high = self.low * scale, self.high * scale
        return f"{mean} [{low:.{digits}f}, {high:.{digits}f}] (n={self.n})"


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean, std and Student-t interval of `values`; one value gets no interval."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(1, mean)
    std = statistics.stdev(values)
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * std / math.sqrt(len(values))
    return Estimate(len(values), mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Part:
    """A study part: the runs of `experiment` whose overrides include `selector`."""

    name: str
    experiment: str
    selector: frozenset[str] = frozenset()
    baseline: str | None = None  # the part it is compared with, seed by seed
    # Other (experiment, selector) pairs that run the same configuration (A7 constant = A1).
    same_as: tuple[tuple[str, frozenset[str]], ...] = ()
    needs: str | None = None  # what it needs that may be missing offline

    def matches(self, overrides: Iterable[str]) -> bool:
        given = set(overrides)
        if any(o.startswith("data=") for o in given):
            return False  # the study's model on other data is not the study part
        experiment = next((o.split("=", 1)[1] for o in given if o.startswith("experiment=")), None)
        candidates = ((self.experiment, self.selector), *self.same_as)
        return any(experiment == name and selector <= given for name, selector in candidates)


def _s(*overrides: str) -> frozenset[str]:
    return frozenset(overrides)


PARTS: tuple[Part, ...] = (
    Part("A1 baseline", "a1_baseline"),
    Part("A2 2 conv", "a2_depth", _s("arch=cnn2"), "A1 baseline"),
    Part("A2 4 conv", "a2_depth", _s("arch=cnn4"), "A1 baseline"),
    Part("A2 5 conv", "a2_depth", _s("arch=cnn5"), "A1 baseline"),
    Part("A3 d0.5 wd1e-4", "a3_regularization", _s("regularization=a3/d05_wd1e-4"), "A1 baseline"),
    Part("A3 d0.4 wd1e-3", "a3_regularization", _s("regularization=a3/d04_wd1e-3"), "A1 baseline"),
    Part("A3 d0.4 wd1e-2", "a3_regularization", _s("regularization=a3/d04_wd1e-2"), "A1 baseline"),
    Part("A3 d0.3 wd1e-3", "a3_regularization", _s("regularization=a3/d03_wd1e-3"), "A1 baseline"),
    Part("A4 BatchNorm", "a4_batchnorm", baseline="A1 baseline"),
    Part("A5 linear", "a5_linear", needs="ImageNet weights"),
    Part("A5 partial", "a5_partial", baseline="A5 linear", needs="ImageNet weights"),
    Part("A6 augmentation", "a6_augmentation", baseline="A1 baseline"),
    Part("A7 constant", "a7_lr_schedule", _s("scheduler=constant"),
         same_as=(("a1_baseline", frozenset()),)),
    Part("A7 step", "a7_lr_schedule", _s("scheduler=step"), "A1 baseline"),
    Part("A7 cosine", "a7_lr_schedule", _s("scheduler=cosine"), "A1 baseline"),
    Part("B1 gap4", "b1_gap4"),
    Part("B2 gap4 slim", "b2_gap4_slim", baseline="B1 gap4"),
    Part("B3 gap4 BN", "b3_gap4_bn", baseline="B1 gap4"),
)  # fmt: skip
PARTS_BY_NAME = {part.name: part for part in PARTS}

# Study parts shown together in one picture: the part family and its baseline.
FAMILIES: dict[str, tuple[str, ...]] = {
    "A2": ("A2 2 conv", "A1 baseline", "A2 4 conv", "A2 5 conv"),
    "A3": ("A1 baseline", "A3 d0.5 wd1e-4", "A3 d0.4 wd1e-3", "A3 d0.4 wd1e-2", "A3 d0.3 wd1e-3"),
    "A4": ("A1 baseline", "A4 BatchNorm"),
    "A5": ("A5 linear", "A5 partial"),
    "A6": ("A1 baseline", "A6 augmentation"),
    "A7": ("A7 constant", "A7 step", "A7 cosine"),
    "B": ("B1 gap4", "B2 gap4 slim", "B3 gap4 BN"),
}


@dataclass(frozen=True)
class Claim:
    """A claim of a study: each (better, worse) pair of parts must differ in that order."""

    text: str
    study: str  # the study's own figures behind it
    orderings: tuple[tuple[str, str], ...]


CLAIMS: tuple[Claim, ...] = (
    Claim("Accuracy rises with depth from 2 to 5 conv layers", "A2: 70.74 < 73.79 < 74.22 < 75.53",
          (("A1 baseline", "A2 2 conv"), ("A2 4 conv", "A1 baseline"), ("A2 5 conv", "A2 4 conv"))),
    Claim("Dropout 0.5 with weight decay 1e-4 raises test accuracy", "A3: 76.67 vs A1 73.79",
          (("A3 d0.5 wd1e-4", "A1 baseline"),)),
    Claim("Dropout 0.4 with weight decay 1e-3 raises test accuracy", "A3: 76.61 vs A1 73.79",
          (("A3 d0.4 wd1e-3", "A1 baseline"),)),
    Claim("Weight decay 1e-2 with dropout 0.4 hurts", "A3: 67.45 vs A1 73.79",
          (("A1 baseline", "A3 d0.4 wd1e-2"),)),
    Claim("Dropout 0.3 with weight decay 1e-3 hurts", "A3: 67.71 vs A1 73.79",
          (("A1 baseline", "A3 d0.3 wd1e-3"),)),
    Claim("BatchNorm raises test accuracy over the baseline", "A4: 77.71 vs A1 73.79",
          (("A4 BatchNorm", "A1 baseline"),)),
    Claim("Partial fine-tuning beats a linear probe (ImageNet ResNet-18)", "A5: 81.00 vs 45.55",
          (("A5 partial", "A5 linear"),)),
    Claim("Augmentation raises test accuracy", "A6: 75.38 vs A1 73.79",
          (("A6 augmentation", "A1 baseline"),)),
    Claim("Cosine > step > constant learning rate", "A7: 77.01 > 75.39 > 73.79",
          (("A7 cosine", "A7 step"), ("A7 step", "A7 constant"))),
    Claim("Halving the widths costs accuracy", "B2 val 74.60 vs B1 val 77.43",
          (("B1 gap4", "B2 gap4 slim"),)),
    Claim("BatchNorm, dropout and augmentation beat the plain 4-layer CNN",
          "B3 test 85.24 vs B1 val 77.43", (("B3 gap4 BN", "B1 gap4"),)),
)  # fmt: skip


@dataclass
class PartRuns:
    """The completed runs of one part: the claim metric per seed (mean of repeats of a seed)."""

    part: Part
    by_seed: dict[int, float] = field(default_factory=dict)
    configurations: set[tuple[str, ...]] = field(default_factory=set)
    unfinished: list[str] = field(default_factory=list)  # their errors

    @property
    def estimate(self) -> Estimate | None:
        return estimate([self.by_seed[s] for s in sorted(self.by_seed)])


def collect(
    runs: Iterable[tuple[list[str], dict[str, Any]]], metric: str = CLAIM_METRIC
) -> dict[str, PartRuns]:
    """Each part's runs, from (overrides, results.json) pairs; parts without runs left out."""
    values: dict[str, dict[int, list[float]]] = {}
    found: dict[str, PartRuns] = {}
    for overrides, results in runs:
        for part in PARTS:
            if not part.matches(overrides):
                continue
            entry = found.setdefault(part.name, PartRuns(part))
            if results.get("status") != "completed" or results.get(metric) is None:
                entry.unfinished.append(str(results.get("error") or results.get("status")))
                continue
            seed = int(results.get("seed", 0))
            values.setdefault(part.name, {}).setdefault(seed, []).append(float(results[metric]))
            entry.configurations.add(
                tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith("seed=")))
            )
    for name, per_seed in values.items():
        found[name].by_seed = {seed: statistics.fmean(v) for seed, v in per_seed.items()}
    return found


@dataclass(frozen=True)
class Difference:
    """`part` minus `baseline`, seed by seed."""

    part: str
    baseline: str
    seeds: tuple[int, ...]
    estimate: Estimate | None

    def verdict(self, expected_sign: int = 1) -> Verdict:
        """Whether the difference has the expected sign, by its interval."""
        e = self.estimate
        if e is None or e.low is None or e.high is None:  # no seed, or one seed, in common
            return "not resolved"
        if expected_sign * e.low > 0 and expected_sign * e.high > 0:
            return "supported"
        if expected_sign * e.low < 0 and expected_sign * e.high < 0:
            return "contradicted"
        return "not resolved"


def paired_difference(parts: dict[str, PartRuns], part: str, baseline: str) -> Difference:
    """Mean and interval of part − baseline over the seeds both completed."""
    a, b = parts.get(part), parts.get(baseline)
    seeds = tuple(sorted(set(a.by_seed) & set(b.by_seed))) if a and b else ()
    diffs = [a.by_seed[s] - b.by_seed[s] for s in seeds] if a and b else []
    return Difference(part, baseline, seeds, estimate(diffs))


def baseline_differences(parts: dict[str, PartRuns]) -> list[Difference]:
    """Every part that has runs against its baseline (A2–A7 vs A1, B2/B3 vs B1, …)."""
    return [
        paired_difference(parts, name, entry.part.baseline)
        for name, entry in parts.items()
        if entry.part.baseline is not None
    ]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    differences: tuple[Difference, ...]
    why_not_run: str = ""

    def evidence(self) -> str:
        """The numbers that decide it: each ordering's paired difference in points."""
        if self.verdict == "not run":
            return self.why_not_run
        parts = []
        for d in self.differences:
            shown = d.estimate.text() if d.estimate else "no paired seeds"
            parts.append(f"{d.part} − {d.baseline}: {shown}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.text,
            "study": self.claim.study,
            "verdict": self.verdict,
            "evidence": self.evidence(),
            "differences": [asdict(d) for d in self.differences],
        }


def judge(claim: Claim, parts: dict[str, PartRuns]) -> ClaimResult:
    """The claim's verdict: every ordering supported → supported; any contradicted →
    contradicted; a needed part without a completed run → not run; else not resolved."""
    missing = [
        name
        for pair in claim.orderings
        for name in pair
        if name not in parts or not parts[name].by_seed
    ]
    if missing:
        needs = {PARTS_BY_NAME[name].needs for name in missing} - {None}
        reason = f"no completed run of {', '.join(dict.fromkeys(missing))}"
        if needs:
            reason += f" (needs {', '.join(sorted(needs))})"  # type: ignore[arg-type]
        return ClaimResult(claim, "not run", (), reason)
    differences = tuple(paired_difference(parts, a, b) for a, b in claim.orderings)
    verdicts = [d.verdict() for d in differences]
    if "contradicted" in verdicts:
        verdict: Verdict = "contradicted"
    elif all(v == "supported" for v in verdicts):
        verdict = "supported"
    else:
        verdict = "not resolved"
    return ClaimResult(claim, verdict, differences)


def judge_all(parts: dict[str, PartRuns]) -> list[ClaimResult]:
    return [judge(claim, parts) for claim in CLAIMS]
