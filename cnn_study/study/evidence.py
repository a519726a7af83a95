"""From repeated runs to evidence: intervals, differences paired by seed, claim verdicts,
and how many seeds an unresolved claim needs.

A part's mean over seeds gets a Student-t confidence interval. Two parts are compared seed
by seed (the same seed shares initialisation and data order, so the difference removes
most of the seed-to-seed spread). A claim ("each part of `order` beats the next", by
more than a margin, zero unless the claim gives one; or one metric of a part beats another
of the same part) is **supported** when every paired interval lies on the claimed side of
the margin, **contradicted** when one lies on the other side, **not resolved** when an
interval includes the margin or fewer than two seeds are paired, **not run** when a part has no
completed run (the reason is kept: failed with its error, needs something, no job).

Repeated looks (`study.until_resolved`): every look at a claim is another chance of a
false verdict, so the error rate α is split evenly over the K planned looks (Bonferroni):
each interval is taken at 1 − α/K. Whatever the looks' dependence, the chance that any
look gives a false verdict stays ≤ α.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, Literal

from scipy import stats

from cnn_study.rundir import REJECTED, Run
from cnn_study.study.definition import ClaimSpec, PartSpec, Study

CONFIDENCE = 0.95
MIN_PLANNING_SEEDS = 3

Verdict = Literal["supported", "contradicted", "not resolved", "not run"]


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` values with their std and t interval (both None when n == 1)."""

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


def t_half_width(std: float, n: int, confidence: float) -> float:
    return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)


Bounds = tuple[float, float]
PROPORTION: Bounds = (0.0, 1.0)  # accuracy, precision, recall, F1, AUROC
PROPORTION_DIFFERENCE: Bounds = (-1.0, 1.0)
PROPORTION_NAMES = ("acc", "precision", "recall", "f1", "auroc")


def metric_bounds(metric: str, difference: bool = False) -> Bounds | None:
    """The range a metric (or a difference of two of it) can take; None when unbounded."""
    name = metric.rsplit("/", 1)[-1].removesuffix("_macro")
    if name not in PROPORTION_NAMES:
        return None
    return PROPORTION_DIFFERENCE if difference else PROPORTION


def estimate(
    values: Sequence[float], confidence: float = CONFIDENCE, bounds: Bounds | None = None
) -> Estimate | None:
    """Mean, std and Student-t interval of `values`; one value gets no interval.

    With `bounds`, the interval is clipped to the range the quantity can take (a mean
    accuracy lies in [0, 1]): clipping never removes a possible value, so the coverage
    stays; two very different seeds no longer give [−5.84, 6.83]."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(1, mean)
    std = statistics.stdev(values)
    half = t_half_width(std, len(values), confidence)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(len(values), mean, std, low, high)


def look_confidence(looks: int, alpha: float = 1 - CONFIDENCE) -> float:
    """Confidence of each interval when α is split over `looks` planned looks."""
    return 1 - alpha / looks


def seeds_needed(differences: Sequence[float], confidence: float, limit: int) -> int | None:
    """Paired seeds at which an interval of this mean and spread would exclude zero: the
    smallest n ≤ `limit`, `limit + 1` when none would, None when fewer than two
    differences give no spread to plan with."""
    if len(differences) < 2:
        return None
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    for n in range(2, limit + 1):
        if mean != 0 and t_half_width(std, n, confidence) < abs(mean):
            return n
    return limit + 1


@dataclass
class PartRuns:
    """A part's runs: the completed ones by seed, the first error of the others."""

    part: PartSpec
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    def by_seed(self, metric: str) -> dict[int, float]:
        """The metric per seed (mean of repeats of one seed) over completed runs."""
        values: dict[int, list[float]] = {}
        for run in self.completed:
            value = run.results.get(metric)
            if isinstance(value, (int, float)):
                values.setdefault(int(run.results.get("seed", 0)), []).append(float(value))
        return {seed: statistics.fmean(v) for seed, v in sorted(values.items())}

    def estimate(self, metric: str, confidence: float = CONFIDENCE) -> Estimate | None:
        return estimate(list(self.by_seed(metric).values()), confidence, metric_bounds(metric))

    @property
    def seeds(self) -> list[int]:
        """Distinct seeds with a completed run."""
        return sorted({int(r.results.get("seed", 0)) for r in self.completed})

    @property
    def status(self) -> str:
        """'completed', 'failed: <first error>', 'rejected: <error>' (config or data refused
        before training), 'not run (needs …): <error>', 'not run'."""
        if self.completed:
            return "completed"
        if not self.runs:
            return f"not run (needs {self.part.needs})" if self.part.needs else "not run"
        error = next((str(r.results.get("error")) for r in self.runs if r.results.get("error")),
                     self.runs[0].status)  # fmt: skip
        if self.part.needs:
            return f"not run (needs {self.part.needs}): {error}"
        if all(r.status == "running" for r in self.runs):
            return "running"
        if all(r.status == REJECTED for r in self.runs):
            return f"rejected: {error}"
        return f"failed: {error}"


def collect(study: Study, members: dict[str, list[Run]]) -> dict[str, PartRuns]:
    return {part.name: PartRuns(part, members.get(part.name, [])) for part in study.parts}


@dataclass(frozen=True)
class Difference:
    """`part` on `metric` minus `baseline` on `baseline_metric` (the same metric when
    None), seed by seed; the claim is that it exceeds `margin`."""

    part: str
    baseline: str
    metric: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    estimate: Estimate | None
    baseline_metric: str | None = None
    margin: float = 0.0

    def verdict(self) -> Verdict:
        """Whether `part` beats `baseline` by more than the margin, by the interval."""
        e = self.estimate
        if e is None or e.low is None or e.high is None:
            return "not resolved"
        if e.low > self.margin:
            return "supported"
        if e.high < self.margin:
            return "contradicted"
        return "not resolved"

    @property
    def within_part(self) -> bool:
        return self.part == self.baseline

    def text(self) -> str:
        shown = self.estimate.text() if self.estimate else "no paired seeds"
        if self.baseline_metric and self.baseline_metric != self.metric:
            name = f"{self.part} {self.metric} − {self.baseline} {self.baseline_metric}"
        else:
            name = f"{self.part} − {self.baseline}"
        claimed = f" (claimed > {self.margin * 100:+g})" if self.margin else ""
        return f"{name}: {shown}{claimed}"


def paired_difference(
    parts: dict[str, PartRuns],
    part: str,
    baseline: str,
    metric: str,
    confidence: float,
    baseline_metric: str | None = None,
    margin: float = 0.0,
) -> Difference:
    """Mean and interval of part − baseline over the seeds both completed."""
    other = baseline_metric or metric
    a, b = parts[part].by_seed(metric), parts[baseline].by_seed(other)
    seeds = tuple(sorted(set(a) & set(b)))
    values = tuple(a[s] - b[s] for s in seeds)
    interval = estimate(values, confidence, metric_bounds(metric, difference=True))
    return Difference(part, baseline, metric, seeds, values, interval, other, margin)


@dataclass(frozen=True)
class ClaimResult:
    claim: ClaimSpec
    verdict: Verdict
    differences: tuple[Difference, ...]
    why_not_run: str = ""
    published: str = ""  # the study's own figures behind the claim

    def evidence(self) -> str:
        if self.verdict == "not run":
            return self.why_not_run
        return "; ".join(d.text() for d in self.differences)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.text,
            "metric": self.claim.metric,
            "study": self.published,
            "verdict": self.verdict,
            "evidence": self.evidence(),
            "differences": [asdict(d) for d in self.differences],
        }


def published_text(claim: ClaimSpec, study: Study) -> str:
    """The study's own figures of the claim's parts, e.g. 'A4 77.71 > A1 73.79'."""
    parts = study.parts_by_name
    entries = claim.entries()
    figures = [(name, parts[name].published.get(metric)) for name, metric in entries]
    if all(value is None for _, value in figures):
        return ""
    labels = [f"{n} {m}" if claim.metrics else n for n, m in entries]
    return " > ".join(
        f"{label} {v * 100:.2f}" if v is not None else f"{label} —"
        for label, (_, v) in zip(labels, figures, strict=True)
    )


def judge(
    claim: ClaimSpec, parts: dict[str, PartRuns], study: Study, confidence: float = CONFIDENCE
) -> ClaimResult:
    """Every ordering supported → supported; any contradicted → contradicted; a part
    without a completed run → not run (with why); else not resolved."""
    published = published_text(claim, study)
    missing = list(dict.fromkeys(n for n, m in claim.entries() if not parts[n].by_seed(m)))
    if missing:
        reasons = "; ".join(f"{name}: {parts[name].status}" for name in missing)
        return ClaimResult(claim, "not run", (), reasons, published)
    differences = tuple(
        paired_difference(
            parts, better, worse, better_metric, confidence, worse_metric, claim.margin
        )
        for (better, better_metric), (worse, worse_metric) in pairwise(claim.entries())
    )
    verdicts = [d.verdict() for d in differences]
    if "contradicted" in verdicts:
        verdict: Verdict = "contradicted"
    elif all(v == "supported" for v in verdicts):
        verdict = "supported"
    else:
        verdict = "not resolved"
    return ClaimResult(claim, verdict, differences, published=published)


def judge_all(
    study: Study, parts: dict[str, PartRuns], confidence: float = CONFIDENCE
) -> list[ClaimResult]:
    return [judge(claim, parts, study, confidence) for claim in study.claims]


def baseline_differences(
    study: Study, parts: dict[str, PartRuns], confidence: float = CONFIDENCE
) -> list[Difference]:
    """Every part with a baseline against it, on test accuracy."""
    return [
        paired_difference(parts, p.name, p.baseline, "test/acc", confidence)
        for p in study.parts
        if p.baseline is not None
    ]


def seed_targets(study: Study, parts: dict[str, PartRuns], confidence: float) -> dict[str, int]:
    """How many seeds each part of an unresolved claim should have after the next round:
    the estimate from the paired differences (at least one more than now), capped at
    `study.max_seeds`. Parts of resolved claims are not named."""
    limit = study.run.max_seeds
    targets: dict[str, int] = {}
    for result in judge_all(study, parts, confidence):
        if result.verdict != "not resolved":
            continue
        open_pairs = [d for d in result.differences if d.verdict() == "not resolved"]
        now = min(len(d.seeds) for d in open_pairs)
        needed = [
            seeds_needed([v - d.margin for v in d.values], confidence, limit) for d in open_pairs
        ]
        # Without a spread to plan with, three seeds give the first useful interval.
        want = max((n if n is not None else MIN_PLANNING_SEEDS) for n in needed)
        target = min(limit, max(now + 1, want))
        if target <= now:
            continue  # the budget is spent for this claim
        for name in {n for d in open_pairs for n in (d.part, d.baseline)}:
            targets[name] = max(targets.get(name, 0), target)
    return targets
