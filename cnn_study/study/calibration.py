"""Does a study's error control hold? Thousands of simulated studies, no training:
`python -m cnn_study.study.calibration [--study a] [--studies 2000] [--seed 0]`.

Each simulated study has the claims, parts, seeds and look plan of a real study file and
runs through the real rounds and looks (`cnn_study.study.looks.run_rounds`), the jobs
replaced by per-seed test accuracies drawn as

    accuracy(part, seed) = 0.7 + mean(part) + seed effect(seed) + noise(part, seed),

seed effect and noise normal with 0.5 points of spread (a seed shares its effect across
parts: what pairing by seed removes). A verdict is false when its statement is: supported
while the claimed order is not true, contradicted while no pair of the order is reversed.
The chance of any false verdict in a study, at any look, must stay at most the study's α;
README's promise and the test suite's calibration test are this number.

Scenarios: every part equal (every claim false, no pair reversed); every claim true by a
hair (each adjacent pair 1e-5 apart in the claimed direction); a 4-part chain true by a
hair, judged once on three seeds.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from cnn_study.rundir import COMPLETED, Run
from cnn_study.study import evidence
from cnn_study.study.definition import (
    ClaimSpec,
    PartSpec,
    RunSettings,
    Study,
    read_study,
    study_path,
)
from cnn_study.study.looks import Seeds, run_rounds

HAIR = 1e-5
SPREAD = 0.005


@dataclass(frozen=True)
class Scenario:
    """A study and the true mean of each part that runs (parts that need something absent
    never run, as on a machine without it)."""

    name: str
    study: Study
    means: dict[str, float]


def runnable(study: Study) -> list[str]:
    return [p.name for p in study.parts if not p.needs]


def equal_means(study: Study) -> dict[str, float]:
    return dict.fromkeys(runnable(study), 0.0)


def hair_means(study: Study, hair: float = HAIR) -> dict[str, float]:
    """Means under which every claim holds by `hair` per adjacent pair: each part `hair`
    above the margin over the part after it (claims across parts on one metric)."""
    means = equal_means(study)
    for _ in range(len(means) + 1):  # longest paths of the claims' order graph
        for claim in study.claims:
            for better, worse in zip(claim.order, claim.order[1:]):
                if better in means and worse in means:
                    means[better] = max(means[better], means[worse] + claim.margin + hair)
    return means


def false_verdict(claim: ClaimSpec, verdict: str, means: dict[str, float]) -> bool:
    """Whether `verdict` states something false of the true `means`."""
    order = claim.order
    if any(name not in means for name in order):
        return False  # not run: no verdict
    holds = all(means[a] - means[b] > claim.margin for a, b in pairwise(order))
    reversed_pair = any(
        means[order[i]] - means[order[j]] < (j - i) * claim.margin
        for i in range(len(order))
        for j in range(i + 1, len(order))
    )
    return (verdict == "supported" and not holds) or (
        verdict == "contradicted" and not reversed_pair
    )


def simulated_looks(
    scenario: Scenario, rng: np.random.Generator, spread: float = SPREAD
) -> list[dict]:
    """One simulated study through the real rounds and looks: its recorded looks."""
    study, means = scenario.study, scenario.means
    values: dict[tuple[str, int], float] = {}
    seed_effects: dict[int, float] = {}

    def run_round(seeds: Seeds) -> None:
        for name, wanted in seeds.items():
            for seed in wanted:
                if name in means and (name, seed) not in values:
                    if seed not in seed_effects:
                        seed_effects[seed] = float(rng.normal(0, spread))
                    noise = float(rng.normal(0, spread))
                    values[(name, seed)] = 0.7 + means[name] + seed_effects[seed] + noise

    def observe() -> dict[str, evidence.PartRuns]:
        members: dict[str, list[Run]] = {}
        for (name, seed), value in values.items():
            results = {"status": COMPLETED, "seed": seed, "test/acc": value}
            members.setdefault(name, []).append(Run(Path(name, str(seed)), results))
        return evidence.collect(study, members)

    return run_rounds(study, [], run_round, observe, lambda looks: None)


def any_false(scenario: Scenario, looks: list[dict]) -> bool:
    claims = scenario.study.claims
    return any(
        false_verdict(claim, look["verdicts"][claim.text], scenario.means)
        for look in looks
        for claim in claims
    )


def false_verdict_rate(scenario: Scenario, studies: int, seed: int = 0) -> tuple[float, float]:
    """(share of simulated studies with any false verdict, its Monte-Carlo standard error)."""
    rng = np.random.default_rng(seed)
    # statsmodels' Holm calls gc.collect() on every correction (60 ms in a process that
    # holds torch); frozen, the objects that already exist are not scanned again.
    gc.freeze()
    try:
        hits = sum(any_false(scenario, simulated_looks(scenario, rng)) for _ in range(studies))
    finally:
        gc.unfreeze()
    rate = hits / studies
    return rate, math.sqrt(max(rate * (1 - rate), 1e-12) / studies)


def chain_study(parts: int = 4, seeds: int = 3) -> Study:
    """One claim `P1 > P2 > … > Pk`, judged once."""
    names = [f"P{i + 1}" for i in range(parts)]
    return Study(
        f"a {parts}-part chain",
        seeds=list(range(seeds)),
        parts=[PartSpec(name) for name in names],
        claims=[ClaimSpec(f"{' > '.join(names)}", names)],
        source="(simulated)",
    )


def study_scenarios(study: Study) -> list[Scenario]:
    return [
        Scenario(f"{study.title}: every part equal", study, equal_means(study)),
        Scenario(f"{study.title}: every claim true by a hair", study, hair_means(study)),
    ]


def bundled_plan(name: str, looks: int, max_seeds: int) -> Study:
    """A bundled study with `until_resolved` at `looks` looks and `max_seeds` seeds."""
    run = RunSettings(until_resolved=looks > 1, max_looks=looks, max_seeds=max_seeds)
    return replace(read_study(study_path(name)), run=run)


def scenarios(name: str, looks: int, max_seeds: int) -> list[Scenario]:
    chain = chain_study()
    return [
        *study_scenarios(bundled_plan(name, looks, max_seeds)),
        Scenario("a 4-part chain true by a hair, one look, 3 seeds", chain, hair_means(chain)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.study.calibration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--study", default="a", help="a bundled study (default a)")
    parser.add_argument("--looks", type=int, default=2, help="planned looks (default 2)")
    parser.add_argument("--max-seeds", type=int, default=5, help="seed budget (default 5)")
    parser.add_argument("--studies", type=int, default=2000, help="simulated studies each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for scenario in scenarios(args.study, args.looks, args.max_seeds):
        rate, error = false_verdict_rate(scenario, args.studies, args.seed)
        alpha = scenario.study.alpha
        print(
            f"{scenario.name}: P(any false verdict) = {rate:.4f} ± {error:.4f} "
            f"({args.studies} studies; α = {alpha:g}: "
            f"{'holds' if rate <= alpha + 3 * error else 'EXCEEDED'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
