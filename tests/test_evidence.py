"""The report's statistics, claim verdicts, repeated looks and per-image comparisons, on
runs and prediction files made by hand with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnn_study.rundir import Run, load_correct, save_predictions
from cnn_study.study import evidence
from cnn_study.study.definition import ClaimSpec, PartSpec, RunSettings, Study
from cnn_study.study.evidence import ErrorControl, estimate, paired_difference, seeds_needed
from cnn_study.study.looks import run_rounds
from cnn_study.study.predictions import compare

NO_WEIGHTS = "CnnStudyError: arch.weights=imagenet, but the ImageNet weights could not be loaded"


def hand_study(until_resolved: bool = False, max_seeds: int = 10) -> Study:
    """A1 baseline; A4 and A6 against it; A2 2 conv; A5 needing weights; four claims."""
    parts = [
        PartSpec("A1 baseline", ["experiment=a1_baseline"], published={"test/acc": 0.7379}),
        PartSpec("A4 BatchNorm", ["experiment=a4_batchnorm"], baseline="A1 baseline",
                 published={"test/acc": 0.7771}),
        PartSpec("A6 augmentation", ["experiment=a6_augmentation"], baseline="A1 baseline"),
        PartSpec("A2 2 conv", ["arch=cnn2"], baseline="A1 baseline"),
        PartSpec("A5 partial", ["experiment=a5_partial"], needs="ImageNet weights"),
    ]  # fmt: skip
    claims = [
        ClaimSpec("BatchNorm helps", ["A4 BatchNorm", "A1 baseline"]),
        ClaimSpec("Augmentation helps", ["A6 augmentation", "A1 baseline"]),
        ClaimSpec("Depth helps", ["A1 baseline", "A2 2 conv"]),
        ClaimSpec("Transfer helps", ["A5 partial", "A1 baseline"]),
    ]
    run = RunSettings(until_resolved=until_resolved, max_seeds=max_seeds)
    return Study("hand-made", parts=parts, claims=claims, run=run, source="hand.yaml")


def done(seed: int, acc: float) -> Run:
    return Run(Path(f"/runs/{seed}-{acc}"), {"status": "completed", "seed": seed, "test/acc": acc})


def unfinished(seed: int, status: str, error: str) -> Run:
    return Run(Path(f"/runs/{seed}-{status}"), {"status": status, "seed": seed, "error": error})


def hand_parts(study: Study) -> dict[str, evidence.PartRuns]:
    """A4 clearly better than A1 on 3 seeds, A6 clearly worse, A2 with one seed, A5 failed."""
    members: dict[str, list[Run]] = {name: [] for name in study.parts_by_name}
    for seed, (a1, a4, a6) in enumerate(
        [(0.73, 0.77, 0.70), (0.74, 0.78, 0.715), (0.72, 0.77, 0.69)]
    ):
        members["A1 baseline"].append(done(seed, a1))
        members["A4 BatchNorm"].append(done(seed, a4))
        members["A6 augmentation"].append(done(seed, a6))
    members["A2 2 conv"].append(done(0, 0.70))
    members["A5 partial"].append(unfinished(0, "failed", NO_WEIGHTS))
    return evidence.collect(study, members)


def test_estimate_has_the_student_t_interval() -> None:
    three = estimate([0.70, 0.72, 0.74])
    assert three is not None
    assert (three.n, three.mean, three.std) == (3, pytest.approx(0.72), pytest.approx(0.02))
    half = 4.302653 * 0.02 / 3**0.5  # t(0.975, 2 df)
    assert three.low == pytest.approx(0.72 - half, abs=1e-6)
    assert three.high == pytest.approx(0.72 + half, abs=1e-6)
    assert three.text() == "72.00 [95 % CI 67.03, 76.97] (n=3)"
    one = estimate([0.73])
    assert one is not None and (one.std, one.low, one.high) == (None, None, None)
    assert one.text() == "73.00 (n=1, no interval)"
    assert estimate([]) is None


def test_differences_are_paired_by_seed_and_skip_a_missing_seed() -> None:
    study = hand_study()
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(0, 0.70), done(1, 0.74)]  # seed 2 of the baseline missing
    members["A4 BatchNorm"] = [done(0, 0.75), done(1, 0.78), done(2, 0.90)]
    parts = evidence.collect(study, members)
    difference = paired_difference(parts, "A4 BatchNorm", "A1 baseline", "test/acc")
    assert difference.seeds == (0, 1)
    assert difference.estimate is not None and difference.estimate.n == 2
    assert difference.estimate.mean == pytest.approx(((0.75 - 0.70) + (0.78 - 0.74)) / 2)


def test_claim_verdicts_supported_contradicted_unresolved_not_run() -> None:
    study = hand_study()
    results = {r.claim.text: r for r in evidence.judge_all(study, hand_parts(study))}
    assert results["BatchNorm helps"].verdict == "supported"
    assert "A4 BatchNorm − A1 baseline: 4.33 [95 % CI" in results["BatchNorm helps"].evidence()
    assert "P(better) 3/3" in results["BatchNorm helps"].evidence()
    assert results["BatchNorm helps"].published == "A4 BatchNorm 77.71 > A1 baseline 73.79"
    assert results["Augmentation helps"].verdict == "contradicted"
    assert results["Depth helps"].verdict == "not resolved"  # one paired seed
    transfer = results["Transfer helps"]
    assert transfer.verdict == "not run"
    assert "not run (needs ImageNet weights): CnnStudyError" in transfer.evidence()


def test_a_part_whose_runs_failed_says_failed_with_the_first_error() -> None:
    study = hand_study()
    members = {name: [] for name in study.parts_by_name}
    members["A4 BatchNorm"] = [unfinished(0, "failed", "RuntimeError: boom"),
                               unfinished(1, "diverged", "NaN")]  # fmt: skip
    parts = evidence.collect(study, members)
    assert parts["A4 BatchNorm"].status == "failed: RuntimeError: boom"
    assert parts["A6 augmentation"].status == "not run"
    result = evidence.judge_all(study, parts)[0]
    assert result.verdict == "not run" and "A4 BatchNorm: failed: RuntimeError: boom" in (
        result.evidence()
    )


def test_distinct_seeds_are_counted_not_runs() -> None:
    study = hand_study()
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(0, 0.70), done(0, 0.72), done(1, 0.74)]
    parts = evidence.collect(study, members)
    assert parts["A1 baseline"].seeds == [0, 1]
    assert parts["A1 baseline"].by_seed("test/acc") == {0: pytest.approx(0.71), 1: 0.74}


def test_the_error_control_splits_alpha_over_the_looks_and_plans_seeds() -> None:
    assert ErrorControl(0.05, 3).per_look == pytest.approx(0.05 / 3)
    assert ErrorControl(0.05, 1).per_look == pytest.approx(0.05)
    # mean 0.011, std 0.001: one-sided at 0.05 / 6 a t test rejects from n = 3 on
    # (t(0.99167, 1 df) = 38.2 → half-width 0.027; t(0.99167, 2 df) = 7.65 → 0.0044).
    assert seeds_needed([0.010, 0.012, 0.011], 0.05 / 6, 10) == 3
    assert seeds_needed([0.0, 0.0], 0.025, 10) == 11  # no difference: no number resolves
    assert seeds_needed([0.01], 0.025, 10) is None  # no spread to plan with
    # mean 0.002, std 0.01: needs more than 10 seeds
    assert seeds_needed([-0.008, 0.012, 0.002], 0.025, 10) == 11


def in_memory_rounds(study: Study, values: dict[str, list[float]]) -> list[dict]:
    """The real rounds and looks (`run_rounds`), each job's test accuracy taken from
    `values[part][seed]`; the looks as the sweeper saves them."""
    finished: dict[str, list[Run]] = {name: [] for name in study.parts_by_name}

    def run_round(seeds: dict[str, list[int]]) -> None:
        for name, wanted in seeds.items():
            have = {int(r.results["seed"]) for r in finished[name]}
            finished[name] += [done(s, values[name][s]) for s in wanted
                               if s not in have and s < len(values.get(name, []))]  # fmt: skip

    saved: list[list[dict]] = []
    looks = run_rounds(study, [], run_round, lambda: evidence.collect(study, finished),
                       lambda looks: saved.append([dict(look) for look in looks]))  # fmt: skip
    assert saved and saved[-1] == looks
    return looks


def test_a_difference_resolved_at_95_percent_is_not_at_the_looks_level() -> None:
    """mean 0.011, std 0.003 on 3 seeds: one-sided p 0.012; Holm over the look's two
    hypotheses: 0.024, under 0.05 (one look) but above 0.05 / 3 (three planned looks).
    The look records the level it was judged at, and plans a fourth seed."""
    values = [0.011, 0.014, 0.008]
    both = {"A1 baseline": [0.70] * 4, "A4 BatchNorm": [0.70 + v for v in values] + [0.711]}
    study = hand_study()
    study.seeds = [0, 1, 2]
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(s, 0.70) for s in range(3)]
    members["A4 BatchNorm"] = [done(s, 0.70 + v) for s, v in enumerate(values)]
    parts = evidence.collect(study, members)
    difference = paired_difference(parts, "A4 BatchNorm", "A1 baseline", "test/acc")
    assert difference.estimate is not None and difference.estimate.low > 0  # 95 %: excludes 0
    assert evidence.judge_all(study, parts, ErrorControl(0.05, 1))[0].verdict == "supported"
    three = ErrorControl(0.05, 3)
    (result, *_) = evidence.judge_all(study, parts, three)
    assert result.verdict == "not resolved"
    assert result.support_adjusted == pytest.approx(2 * difference.above_p)

    planned = hand_study(until_resolved=True, max_seeds=6)
    planned.seeds = [0, 1, 2]
    looks = in_memory_rounds(planned, both)
    first = looks[0]
    assert (first["alpha"], first["planned_looks"], first["level"]) == (0.05, 3, 0.05 / 3)
    assert first["method"] == "holm" and first["tests"] == 2
    assert first["verdicts"]["BatchNorm helps"] == "not resolved"
    assert first["targets"] == {"A4 BatchNorm": 4, "A1 baseline": 4}  # n = 4 would resolve it
    assert looks[1]["seeds"]["A4 BatchNorm"] == [0, 1, 2, 3]


def test_a_chain_is_contradicted_by_its_ends_when_its_steps_are_inconclusive() -> None:
    """A − B and B − C swing from seed to seed (neither resolves), A − C is clearly
    negative: the claim A > B > C is contradicted (the old judge read adjacent pairs only
    and said "not resolved")."""
    parts = [PartSpec(name, [f"optimizer.lr=0.00{i + 1}"]) for i, name in enumerate("ABC")]
    claim = ClaimSpec("A > B > C", ["A", "B", "C"])
    study = Study("chain", parts=parts, claims=[claim], source="chain.yaml")
    a_minus_c = (-0.0200, -0.0207, -0.0214)
    a_minus_b = (-0.03, 0.01, -0.01)
    members = {
        "C": [done(s, 0.70) for s in range(3)],
        "A": [done(s, 0.70 + d) for s, d in enumerate(a_minus_c)],
        "B": [done(s, 0.70 + ac - ab) for s, (ac, ab) in enumerate(zip(a_minus_c, a_minus_b))],
    }
    (result,) = evidence.judge_all(study, evidence.collect(study, members))
    assert [d.name for d in result.adjacent] == ["A − B", "B − C"]
    assert all(min(d.above_p, d.below_p) > 0.05 for d in result.adjacent)
    assert result.verdict == "contradicted"
    assert result.reversed_pair is not None and result.reversed_pair.name == "A − C"
    assert "A − C: -2.07 [95 % CI" in result.evidence()


def test_a_tie_on_two_seeds_decides_nothing() -> None:
    """Two seeds, each ahead by one test image in 10,000: the differences have no spread,
    a t interval would be [0.01, 0.01] and say "supported"; the exact sign test on two
    seeds cannot (p = 0.25)."""
    study = hand_study()
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(0, 0.7314), done(1, 0.7331)]
    members["A4 BatchNorm"] = [done(0, 0.7315), done(1, 0.7332)]
    (result, *_) = evidence.judge_all(study, evidence.collect(study, members))
    (difference,) = result.adjacent
    assert difference.above_p == pytest.approx(0.25)
    assert difference.improvement == 1.0
    assert result.verdict == "not resolved"
    assert "P(better) 2/2" in result.evidence()


def test_seed_targets_name_only_the_parts_of_open_pairs_up_to_the_budget() -> None:
    study = hand_study(until_resolved=True, max_seeds=5)
    parts = hand_parts(study)  # only "Depth helps" is open: one seed of A2, no spread yet
    assert evidence.seed_targets(study, parts, ErrorControl(0.05, 3)) == {
        "A1 baseline": 3,
        "A2 2 conv": 3,
    }
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(s, 0.70) for s in range(5)]
    members["A2 2 conv"] = [done(s, 0.70) for s in range(5)]
    spent = evidence.collect(study, members)
    assert evidence.seed_targets(study, spent, ErrorControl(0.05, 3)) == {}  # the budget


def write_predictions(folder: Path, correct: np.ndarray, labels: np.ndarray) -> Path:
    """Probabilities whose argmax is the label where `correct`, the next class elsewhere."""
    folder.mkdir(parents=True)
    predicted = np.where(correct, labels, (labels + 1) % 10)
    probabilities = np.full((len(labels), 10), 0.01, dtype=np.float32)
    probabilities[np.arange(len(labels)), predicted] = 0.91
    return save_predictions(folder, labels, probabilities)


def test_churn_and_exact_mcnemar_on_hand_made_prediction_files(tmp_path: Path) -> None:
    labels = np.arange(100) % 10
    a = np.ones(100, dtype=bool)
    b = np.ones(100, dtype=bool)
    a[:2] = False  # 2 images only b gets right
    b[2:10] = False  # 8 images only a gets right
    b[10:15] = a[10:15] = False  # 5 both get wrong
    write_predictions(tmp_path / "a", a, labels)
    write_predictions(tmp_path / "b", b, labels)
    first, second = load_correct(tmp_path / "a"), load_correct(tmp_path / "b")
    assert first is not None and second is not None
    comparison = compare(first, second)
    assert (comparison.only_a_right, comparison.only_b_right) == (8, 2)
    assert comparison.churn == pytest.approx(0.10)
    # exact two-sided binomial of 8 of 10 at 1/2: 2 × P(X ≥ 8) = 2 × 56/1024
    assert comparison.mcnemar_p == pytest.approx(112 / 1024)
    # one-sided, in the claimed direction: P(X ≥ 8) for "a better", P(X ≥ 2) for "b better"
    assert comparison.a_better_p == pytest.approx(56 / 1024)
    assert compare(second, first).a_better_p == pytest.approx(1 - 11 / 1024)
    # the text says which side the images favour, whatever the claim's direction
    assert (
        compare(second, first)
        .text("B", "A")
        .startswith("favours A (8 images only A gets right, 2 only B)")
    )
    with np.load(tmp_path / "a" / "test_predictions.npz") as saved:
        assert saved["probabilities"].dtype == np.float16 and saved["target"].shape == (100,)
    other = (labels[::-1].copy(), a)
    with pytest.raises(ValueError, match="different images"):
        compare(first, other)


def test_intervals_stay_within_the_range_of_a_proportion() -> None:
    """Two wildly different seeds: the t interval of a mean accuracy would be
    [0.5 ± 5.08]; it is clipped to [0, 1], a difference of accuracies to [−1, 1]."""
    unbounded = estimate([0.1, 0.9])
    assert unbounded is not None and unbounded.low == pytest.approx(0.5 - 12.706205 * 0.4)
    bounded = estimate([0.1, 0.9], bounds=evidence.metric_bounds("test/acc"))
    assert bounded is not None and (bounded.low, bounded.high) == (0.0, 1.0)
    assert bounded.mean == pytest.approx(0.5)
    assert bounded.text() == "50.00 [95 % CI 0.00, 100.00] (n=2)"
    assert evidence.metric_bounds("test/f1_macro") == (0.0, 1.0)
    assert evidence.metric_bounds("test/acc", difference=True) == (-1.0, 1.0)
    assert evidence.metric_bounds("test/loss") is None
    study = hand_study()
    members = {name: [] for name in study.parts_by_name}
    members["A1 baseline"] = [done(0, 0.1), done(1, 0.9)]
    members["A4 BatchNorm"] = [done(0, 0.9), done(1, 0.1)]
    parts = evidence.collect(study, members)
    accuracy = parts["A1 baseline"].estimate("test/acc")
    assert accuracy is not None and (accuracy.low, accuracy.high) == (0.0, 1.0)
    difference = paired_difference(parts, "A4 BatchNorm", "A1 baseline", "test/acc")
    assert difference.estimate is not None
    assert (difference.estimate.low, difference.estimate.high) == (-1.0, 1.0)


def test_a_claim_within_a_part_compares_two_metrics_of_the_same_runs() -> None:
    """B1 overfits: its last-epoch train accuracy beats its validation accuracy, paired
    by seed within the part's own runs."""
    part = PartSpec("B1 gap4", ["experiment=b1_gap4"],
                    published={"train/acc": 0.9385, "val/acc": 0.7743})  # fmt: skip
    claim = ClaimSpec("B1 overfits", ["B1 gap4", "B1 gap4"], metrics=["train/acc", "val/acc"])
    study = Study("b", parts=[part], claims=[claim], source="b.yaml")
    runs = [Run(Path(f"/r/{s}"), {"status": "completed", "seed": s, "train/acc": t, "val/acc": v})
            for s, (t, v) in enumerate([(0.93, 0.77), (0.95, 0.78), (0.94, 0.76)])]  # fmt: skip
    (result,) = evidence.judge_all(study, evidence.collect(study, {"B1 gap4": runs}))
    assert result.verdict == "supported"
    (difference,) = result.differences
    assert difference.values == pytest.approx((0.16, 0.17, 0.18))
    assert difference.within_part
    assert result.evidence().startswith("B1 gap4 train/acc − B1 gap4 val/acc: 17.00 [95 % CI")
    assert result.published == "B1 gap4 train/acc 93.85 > B1 gap4 val/acc 77.43"
    no_train = [Run(Path("/r/x"), {"status": "completed", "seed": 0, "val/acc": 0.7})]
    (missing,) = evidence.judge_all(study, evidence.collect(study, {"B1 gap4": no_train}))
    assert missing.verdict == "not run"


@pytest.mark.parametrize(
    ("last_conv", "verdict"),
    [
        ((0.71, 0.72, 0.70), "supported"),  # last conv 0-1 points above head: not by much
        ((0.80, 0.81, 0.79), "contradicted"),  # 9 points above: by much
        ((0.70, 0.78, 0.74), "not resolved"),  # spread straddles the margin
    ],
)
def test_a_negative_margin_claims_not_by_much(last_conv: tuple, verdict: str) -> None:
    """head − last conv > −2 points: the last conv does not beat the head by more than 2."""
    parts = [PartSpec("head", ["finetune=head"]), PartSpec("last", ["finetune=last_block"])]
    claim = ClaimSpec("not by much", ["head", "last"], margin=-0.02)
    study = Study("b", parts=parts, claims=[claim], source="b.yaml")
    members = {
        "head": [done(s, a) for s, a in enumerate((0.71, 0.71, 0.70))],
        "last": [done(s, a) for s, a in enumerate(last_conv)],
    }
    (result,) = evidence.judge_all(study, evidence.collect(study, members))
    assert result.verdict == verdict
    assert "(claimed > -2)" in result.evidence()


def test_a_claim_on_the_calibration_error_reads_lower_as_better() -> None:
    """`metric: test/ece` (lower is better, the registry's direction): label smoothing's ECE
    below the baseline's on every seed supports "label smoothing lowers ECE"; higher on
    every seed contradicts it. The report names the direction."""
    parts = [PartSpec("smooth", ["loss.label_smoothing=0.1"]), PartSpec("base", [])]
    claim = ClaimSpec("smoothing lowers ECE", ["smooth", "base"], metric="test/ece")
    study = Study("c", parts=parts, claims=[claim], source="c.yaml")
    assert claim.lower_is_better and claim.direction_text == "lower is better"

    def ece(seed: int, value: float) -> Run:
        return Run(Path(f"/r/{seed}-{value}"), {"status": "completed", "seed": seed,
                                               "test/ece": value})  # fmt: skip

    for smooth, verdict in (((0.020, 0.022, 0.019), "supported"),
                            ((0.090, 0.094, 0.089), "contradicted")):  # fmt: skip
        members = {"base": [ece(s, v) for s, v in enumerate((0.060, 0.063, 0.058))],
                   "smooth": [ece(s, v) for s, v in enumerate(smooth)]}  # fmt: skip
        (result,) = evidence.judge_all(study, evidence.collect(study, members))
        assert result.verdict == verdict
        assert "base − smooth (test/ece, lower is better)" in result.evidence()
    higher = ClaimSpec("x", ["smooth", "base"], metric="test/ece", direction="higher")
    assert not higher.lower_is_better


def test_an_unknown_claim_metric_is_one_line(tmp_path: Path, capsys) -> None:
    from cnn_study.study.__main__ import main

    study = {"title": "t", "parts": [{"name": "a", "overrides": []},
                                     {"name": "b", "overrides": ["scheduler=step"]}],
             "claims": [{"text": "x", "order": ["a", "b"], "metric": "test/eec"}]}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(study))
    assert main([f"study={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "claims[0].metric: 'test/eec' is not a metric runs record" in err
    assert "test/ece" in err and str(path) in err


def test_a_round_with_jobs_that_did_not_finish_is_no_look() -> None:
    """A job that failed (a crash, a fixable error) leaves its round open: no look is
    recorded, so the same command runs it again and looks then (a look taken over failed
    jobs would spend a level on claims it could not judge)."""
    study = hand_study(until_resolved=True)
    saved: list = []
    looks = run_rounds(study, [], lambda seeds: None, lambda: hand_parts(study), saved.append,
                       lambda seeds: ["a4_batchnorm/seed1"])  # fmt: skip
    assert looks == [] and saved == []
