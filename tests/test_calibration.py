"""README's promise on verdicts, checked by simulation: over thousands of simulated studies
(no training), run through the real rounds and looks, the chance of any false verdict in a
study stays at most its α. Before the study-wide control (adjacent pairs at 95 %, any pair
contradicting): 0.34 (Study A, all parts equal), 0.24 (every claim true by a hair), 0.073
(a 4-part chain true by a hair, one look)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cnn_study.study import calibration

STUDIES = 2000  # Monte-Carlo standard error about 0.005 at a rate of 0.05


@pytest.mark.parametrize(
    "index", [0, 1, 2], ids=["study-a-all-equal", "study-a-true-by-a-hair", "chain-4-one-look"]
)
def test_any_false_verdict_stays_at_most_alpha(index: int) -> None:
    scenario = calibration.scenarios("a", looks=2, max_seeds=5)[index]
    if index < 2:  # Study A's claims, judged at two planned looks, up to five seeds
        assert scenario.study.planned_looks == 2 and scenario.study.run.max_seeds == 5
        assert sum(p.needs is None for p in scenario.study.parts) == len(scenario.means)
    rate, error = calibration.false_verdict_rate(scenario, STUDIES, seed=index)
    assert rate <= scenario.study.alpha + 3 * error, (scenario.name, rate, error)


def test_the_simulation_sees_false_verdicts_it_should() -> None:
    """The checker is not blind: judged at α = 0.5, the same simulation finds far more
    false verdicts than 0.05, and a true, large effect is supported."""
    equal = calibration.scenarios("a", looks=1, max_seeds=3)[0]
    loose = calibration.Scenario("loose", replace(equal.study, alpha=0.5),
                                 equal.means)  # fmt: skip
    rate, _ = calibration.false_verdict_rate(loose, 300)
    assert rate > 0.2
    chain = calibration.chain_study(parts=2, seeds=5)
    clear = calibration.Scenario("clear", chain, {"P1": 0.05, "P2": 0.0})
    looks = calibration.simulated_looks(clear, np.random.default_rng(0))
    assert looks[-1]["verdicts"] == {"P1 > P2": "supported"}
