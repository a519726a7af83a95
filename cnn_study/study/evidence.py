"""From repeated runs to evidence: differences paired by seed, claim verdicts under one
error control for the whole study, and how many seeds an unresolved claim needs.

Two parts are compared seed by seed (the same seed shares initialisation and data order,
so the difference removes most of the seed-to-seed spread): a one-sided paired t test
against the claim's margin, or, when the differences have no spread at all (ties), the
exact sign test — a zero-spread difference on two seeds decides nothing.

A claim `order: [P1, …, Pk]` (each part beats the next by more than `margin`) has two
hypotheses that a verdict rejects:
- **supported** rejects "the claim is false": every adjacent pair P_i − P_(i+1) is shown
  above the margin (an intersection-union test: its p is the largest of the pairs' p);
- **contradicted** rejects "the claim is true": some ordered pair P_i − P_j (i < j, the
  ends included) is shown below (j − i) × margin (Bonferroni over those pairs).

Error control (`ErrorControl`): the study's α is split evenly over its K planned looks;
at each look the two hypotheses of every judged claim are corrected together by Holm's
step-down procedure (statsmodels' `multipletests`). A false verdict (supported when the
claim is false, contradicted when no pair is reversed) rejects a true hypothesis, so the
chance of any false verdict, over every claim of the study and every look, is at most α
— whatever the dependence between claims and looks. `cnn_study.study.calibration`
checks this by simulation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Any, Literal

from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from cnn_study.metrics import is_proportion
from cnn_study.rundir import DIVERGED, REJECTED, Run
from cnn_study.study.definition import ClaimSpec, PartSpec, Study

DESCRIPTIVE = 0.95  # the level of every interval shown beside a verdict (never deciding it)
MIN_PLANNING_SEEDS = 3
# Differences whose spread is below this (one image in a million) are ties: float32
# accuracies of equal counts differ by rounding only.
TIE_SPREAD = 1e-6

Verdict = Literal["supported", "contradicted", "not resolved", "not run"]


@dataclass(frozen=True)
class ErrorControl:
    """α for the whole study, spent evenly over `looks` planned looks; Holm over the
    hypotheses of each look."""

    alpha: float = 0.05
    looks: int = 1

    @property
    def per_look(self) -> float:
        return self.alpha / self.looks

    def text(self) -> str:
        spent = (
            f"α = {self.alpha:g} for the whole study, {self.per_look:.4g} at each of "
            f"{self.looks} planned looks"
            if self.looks > 1
            else f"α = {self.alpha:g} for the whole study, one look"
        )
        return (
            f"{spent}; at a look, every judged claim's two hypotheses (supported, "
            "contradicted) are corrected together by Holm's step-down procedure, so the "
            f"chance of any false verdict in the whole study is at most {self.alpha:g}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "planned_looks": self.looks, "level": self.per_look,
                "method": "holm"}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` values with their std and t interval at `confidence` (None when n == 1)."""

    n: int
    mean: float
    std: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float = DESCRIPTIVE

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """'74.12 [95 % CI 73.05, 75.19] (n=3)', or '74.12 (n=1, no interval)'."""
        mean = f"{self.mean * scale:.{digits}f}"
        if self.low is None or self.high is None:
            return f"{mean} (n={self.n}, no interval)"
        low, high = self.low * scale, self.high * scale
        level = f"{self.confidence * 100:g} % CI"
        return f"{mean} [{level} {low:.{digits}f}, {high:.{digits}f}] (n={self.n})"


def t_half_width(std: float, n: int, confidence: float) -> float:
    return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)


Bounds = tuple[float, float]
PROPORTION: Bounds = (0.0, 1.0)  # accuracy, precision, recall, F1, AUROC, ECE
PROPORTION_DIFFERENCE: Bounds = (-1.0, 1.0)


def metric_bounds(metric: str, difference: bool = False) -> Bounds | None:
    """The range a metric (or a difference of two of it) can take; None when unbounded."""
    if not is_proportion(metric):
        return None
    return PROPORTION_DIFFERENCE if difference else PROPORTION


def estimate(
    values: Sequence[float], confidence: float = DESCRIPTIVE, bounds: Bounds | None = None
) -> Estimate | None:
    """Mean, std and Student-t interval of `values`; one value gets no interval.

    With `bounds`, the interval is clipped to the range the quantity can take (a mean
    accuracy lies in [0, 1]): clipping never removes a possible value, so the coverage
    stays; two very different seeds no longer give [−5.84, 6.83]."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(1, mean, confidence=confidence)
    std = statistics.stdev(values)
    half = t_half_width(std, len(values), confidence)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(len(values), mean, std, low, high, confidence)


def one_sided_p(differences: Sequence[float], greater: bool) -> float:
    """p of "the mean difference is ≤ 0" (`greater`) or "≥ 0" against the data: a paired
    one-sided t test; the exact sign test when the differences have no spread (ties); 1
    below two differences."""
    n = len(differences)
    if n < 2:
        return 1.0
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    if std <= TIE_SPREAD:
        ahead = sum((d > 0) if greater else (d < 0) for d in differences)
        if ahead == 0:
            return 1.0
        return float(stats.binomtest(ahead, n, 0.5, alternative="greater").pvalue)
    t = mean / (std / math.sqrt(n))
    # special.stdtr is the Student-t CDF that scipy.stats.t wraps (much faster to call).
    return float(special.stdtr(n - 1, -t if greater else t))


def seeds_needed(differences: Sequence[float], level: float, limit: int) -> int | None:
    """Paired seeds at which a one-sided test at `level` of this mean and spread would
    reject: the smallest n ≤ `limit`, `limit + 1` when none would, None when fewer than two
    differences give no spread to plan with."""
    if len(differences) < 2:
        return None
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    for n in range(2, limit + 1):
        if mean != 0 and t_half_width(std, n, 1 - 2 * level) < abs(mean):
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

    def estimate(self, metric: str, confidence: float = DESCRIPTIVE) -> Estimate | None:
        return estimate(list(self.by_seed(metric).values()), confidence, metric_bounds(metric))

    @property
    def seeds(self) -> list[int]:
        """Distinct seeds with a completed run."""
        return sorted({int(r.results.get("seed", 0)) for r in self.completed})

    @property
    def status(self) -> str:
        """'completed', 'diverged: <why>' (every run's loss became NaN), 'failed: <first
        error>', 'rejected: <error>' (config or data refused before training), 'not run
        (needs …): <error>', 'not run'."""
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
        if all(r.status == DIVERGED for r in self.runs):  # a result of the recipe, no crash
            return f"diverged: {error}"
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
    baseline_metric: str | None = None
    margin: float = 0.0
    lower_is_better: bool = False  # values are baseline − part then: positive is better

    @cached_property
    def estimate(self) -> Estimate | None:
        """Mean and 95 % interval (descriptive: verdicts come from the corrected tests)."""
        return estimate(self.values, DESCRIPTIVE, metric_bounds(self.metric, difference=True))

    @property
    def above_p(self) -> float:
        """p of "part − baseline ≤ margin" (small: shown above the margin)."""
        return one_sided_p([v - self.margin for v in self.values], greater=True)

    @property
    def below_p(self) -> float:
        """p of "part − baseline ≥ margin" (small: shown below the margin)."""
        return one_sided_p([v - self.margin for v in self.values], greater=False)

    @property
    def improvement(self) -> float | None:
        """P(part beats baseline by the margin) over the paired seeds, ties counting half
        (Bouthillier et al. 2021): survives ties that a zero-width interval hides."""
        if not self.values:
            return None
        wins = sum(1.0 if v > self.margin else 0.5 if v == self.margin else 0.0
                   for v in self.values)  # fmt: skip
        return wins / len(self.values)

    @property
    def within_part(self) -> bool:
        return self.part == self.baseline

    @property
    def name(self) -> str:
        if self.baseline_metric and self.baseline_metric != self.metric:
            first, second = f"{self.part} {self.metric}", f"{self.baseline} {self.baseline_metric}"
        else:
            first, second = self.part, self.baseline
        if self.lower_is_better:
            return f"{second} − {first} ({self.metric}, lower is better)"
        return f"{first} − {second}"

    def text(self) -> str:
        if not self.values:
            return f"{self.name}: no paired seeds"
        e = self.estimate
        assert e is not None
        claimed = f" (claimed > {self.margin * 100:+g})" if self.margin else ""
        wins = self.improvement or 0.0
        return (
            f"{self.name}: {e.text()}{claimed}, P(better) {wins * len(self.values):g}/"
            f"{len(self.values)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "estimate": asdict(self.estimate) if self.estimate else None,
            "probability_of_improvement": self.improvement,
            "above_p": self.above_p,
            "below_p": self.below_p,
        }


def paired_difference(
    parts: dict[str, PartRuns],
    part: str,
    baseline: str,
    metric: str,
    baseline_metric: str | None = None,
    margin: float = 0.0,
    lower_is_better: bool = False,
) -> Difference:
    """part − baseline (baseline − part when lower is better: positive always favours the
    part) over the seeds both completed."""
    other = baseline_metric or metric
    a, b = parts[part].by_seed(metric), parts[baseline].by_seed(other)
    seeds = tuple(sorted(set(a) & set(b)))
    sign = -1.0 if lower_is_better else 1.0
    values = tuple(sign * (a[s] - b[s]) for s in seeds)
    return Difference(part, baseline, metric, seeds, values, other, margin, lower_is_better)


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict, its pairs and its two hypotheses' p-values (raw and
    Holm-adjusted over the study's look)."""

    claim: ClaimSpec
    verdict: Verdict
    adjacent: tuple[Difference, ...] = ()
    ordered: tuple[Difference, ...] = ()  # every pair i < j, for contradiction
    support_p: float | None = None
    contradict_p: float | None = None
    support_adjusted: float | None = None
    contradict_adjusted: float | None = None
    why_not_run: str = ""
    published: str = ""  # the study's own figures behind the claim

    @property
    def differences(self) -> tuple[Difference, ...]:
        """The pairs shown: the adjacent ones, for a chain its ends (first − last: pair
        (0, k − 1), after (0, 1) … (0, k − 2) in `ordered`), and the pair that contradicts."""
        shown = list(self.adjacent)
        if len(self.adjacent) > 1:
            shown.append(self.ordered[len(self.adjacent) - 1])
        against = self.reversed_pair
        if self.verdict == "contradicted" and against is not None and against not in shown:
            shown.append(against)
        return tuple(shown)

    @property
    def reversed_pair(self) -> Difference | None:
        """The ordered pair with the strongest evidence against the claim."""
        return min(self.ordered, key=lambda d: d.below_p, default=None)

    def evidence(self) -> str:
        if self.verdict == "not run":
            return self.why_not_run
        lines = [d.text() for d in self.differences]
        if self.support_adjusted is not None and self.contradict_adjusted is not None:
            lines.append(
                f"Holm-adjusted p: supported {self.support_adjusted:.2g}, contradicted "
                f"{self.contradict_adjusted:.2g}"
            )
        return "; ".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim.text,
            "metric": self.claim.metric,
            "direction": self.claim.direction_text,
            "study": self.published,
            "verdict": self.verdict,
            "evidence": self.evidence(),
            "support_p": self.support_p,
            "contradict_p": self.contradict_p,
            "support_adjusted_p": self.support_adjusted,
            "contradict_adjusted_p": self.contradict_adjusted,
            "differences": [d.as_dict() for d in self.differences],
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


def claim_pairs(
    claim: ClaimSpec, parts: dict[str, PartRuns]
) -> tuple[tuple[Difference, ...], tuple[Difference, ...]]:
    """(adjacent pairs, every ordered pair i < j with margin (j − i) × margin)."""
    entries = list(enumerate(claim.entries()))
    lower = claim.lower_is_better
    ordered = tuple(
        paired_difference(parts, a, b, a_metric, b_metric, (j - i) * claim.margin, lower)
        for (i, (a, a_metric)), (j, (b, b_metric)) in combinations(entries, 2)
    )
    adjacent = tuple(
        d for d, ((i, _), (j, _)) in zip(ordered, combinations(entries, 2)) if j == i + 1
    )
    return adjacent, ordered


def judge_all(
    study: Study, parts: dict[str, PartRuns], control: ErrorControl | None = None
) -> list[ClaimResult]:
    """Every claim judged at one look: a part without a completed run → not run (with
    why); the others' hypotheses Holm-corrected together at the look's level."""
    control = control or ErrorControl()
    judged: list[tuple[ClaimSpec, str, tuple, tuple, float, float]] = []
    results: dict[int, ClaimResult] = {}
    for index, claim in enumerate(study.claims):
        published = published_text(claim, study)
        missing = list(dict.fromkeys((n, m) for n, m in claim.entries()
                                     if not parts[n].by_seed(m)))  # fmt: skip
        if missing:
            reasons = "; ".join(
                f"{name}: its runs recorded no {metric}" if parts[name].completed
                else f"{name} diverged, so the claim is not judged ({parts[name].status})"
                if parts[name].status.startswith("diverged")
                else f"{name}: {parts[name].status}"
                for name, metric in missing
            )  # fmt: skip
            results[index] = ClaimResult(claim, "not run", why_not_run=reasons,
                                         published=published)  # fmt: skip
            continue
        adjacent, ordered = claim_pairs(claim, parts)
        support = max(d.above_p for d in adjacent)  # intersection-union
        contradict = float(multipletests([d.below_p for d in ordered], method="bonferroni")[1]
                           .min())  # fmt: skip
        judged.append((claim, published, adjacent, ordered, support, contradict))
        results[index] = ClaimResult(claim, "not resolved")
    if judged:
        raw = [p for *_, support, contradict in judged for p in (support, contradict)]
        reject, adjusted, _, _ = multipletests(raw, alpha=control.per_look, method="holm")
        positions = [i for i, r in results.items() if r.verdict != "not run"]
        for k, (index, entry) in enumerate(zip(positions, judged)):
            claim, published, adjacent, ordered, support, contradict = entry
            verdict: Verdict = (
                "contradicted" if reject[2 * k + 1]
                else "supported" if reject[2 * k]
                else "not resolved"
            )  # fmt: skip
            results[index] = ClaimResult(
                claim, verdict, adjacent, ordered, support, contradict,
                float(adjusted[2 * k]), float(adjusted[2 * k + 1]), published=published,
            )  # fmt: skip
    return [results[i] for i in range(len(study.claims))]


def tests_at_look(results: list[ClaimResult]) -> int:
    """How many hypotheses a look corrected together (two per judged claim)."""
    return 2 * sum(r.verdict != "not run" for r in results)


def baseline_differences(study: Study, parts: dict[str, PartRuns]) -> list[Difference]:
    """Every part with a baseline against it, on test accuracy (descriptive)."""
    return [
        paired_difference(parts, p.name, p.baseline, "test/acc")
        for p in study.parts
        if p.baseline is not None
    ]


def seed_targets(
    study: Study,
    parts: dict[str, PartRuns],
    control: ErrorControl,
    results: list[ClaimResult] | None = None,
) -> dict[str, int]:
    """How many seeds each part of an unresolved claim should have after the next round:
    planned for its open adjacent pairs at the look's smallest Holm level (per look α over
    the look's tests), at least one more than now, capped at `study.max_seeds`. Parts of
    resolved claims are not named. `results`: the look's verdicts, when judged already."""
    limit = study.run.max_seeds
    results = results if results is not None else judge_all(study, parts, control)
    level = control.per_look / max(1, tests_at_look(results))
    targets: dict[str, int] = {}
    for result in results:
        if result.verdict != "not resolved":
            continue
        open_pairs = [d for d in result.adjacent if min(d.above_p, d.below_p) > level]
        if not open_pairs:
            open_pairs = list(result.adjacent)
        now = min(len(d.seeds) for d in open_pairs)
        needed = [seeds_needed([v - d.margin for v in d.values], level, limit)
                  for d in open_pairs]  # fmt: skip
        # Without a spread to plan with, three seeds give the first useful interval.
        want = max((n if n is not None else MIN_PLANNING_SEEDS) for n in needed)
        target = min(limit, max(now + 1, want))
        if target <= now:
            continue  # the budget is spent for this claim
        for name in {n for d in open_pairs for n in (d.part, d.baseline)}:
            targets[name] = max(targets.get(name, 0), target)
    return targets
