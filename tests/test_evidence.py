"""The report's statistics and claim verdicts, on runs built by hand with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn_study import evidence
from cnn_study.evidence import estimate, paired_difference
from cnn_study.report import write_report

A1 = ["experiment=a1_baseline"]
A4 = ["experiment=a4_batchnorm"]
A6 = ["experiment=a6_augmentation"]
CNN2 = ["experiment=a2_depth", "arch=cnn2"]
A5_LINEAR = ["experiment=a5_linear"]
A5_PARTIAL = ["experiment=a5_partial"]
NO_WEIGHTS = "CnnStudyError: arch.weights=imagenet, but the ImageNet weights could not be loaded"


def done(seed: int, acc: float) -> dict:
    return {"status": "completed", "seed": seed, "test/acc": acc}


def unfinished(seed: int, status: str, error: str) -> dict:
    return {"status": status, "seed": seed, "error": error}


def test_estimate_has_the_student_t_interval() -> None:
    three = estimate([0.70, 0.72, 0.74])
    assert three is not None
    assert (three.n, three.mean, three.std) == (3, pytest.approx(0.72), pytest.approx(0.02))
    half = 4.302653 * 0.02 / 3**0.5  # t(0.975, 2 df)
    assert three.low == pytest.approx(0.72 - half, abs=1e-6)
    assert three.high == pytest.approx(0.72 + half, abs=1e-6)
    two = estimate([0.5, 0.7])
    assert two is not None and two.low == pytest.approx(0.6 - 12.706205 * 0.1, abs=1e-5)
    assert three.text() == "72.00 [67.03, 76.97] (n=3)"


def test_one_seed_gets_no_invented_interval() -> None:
    one = estimate([0.73])
    assert one is not None
    assert (one.n, one.mean, one.std, one.low, one.high) == (1, 0.73, None, None, None)
    assert one.text() == "73.00 (n=1, no interval)"
    assert estimate([]) is None


def test_differences_are_paired_by_seed_and_skip_a_missing_baseline_seed() -> None:
    parts = evidence.collect([
        (A1, done(0, 0.70)), (A1, done(1, 0.74)),  # seed 2 of the baseline is missing
        (A4, done(0, 0.75)), (A4, done(1, 0.78)), (A4, done(2, 0.90)),
    ])  # fmt: skip
    difference = paired_difference(parts, "A4 BatchNorm", "A1 baseline")
    assert difference.seeds == (0, 1)
    assert difference.estimate is not None
    assert difference.estimate.mean == pytest.approx(((0.75 - 0.70) + (0.78 - 0.74)) / 2)
    assert difference.estimate.n == 2


def test_failed_and_diverged_runs_are_left_out_of_the_statistics() -> None:
    parts = evidence.collect([
        (A1, done(0, 0.70)), (A1, unfinished(1, "diverged", "NaN")),
        (A1, unfinished(2, "failed", "RuntimeError: boom")),
    ])  # fmt: skip
    baseline = parts["A1 baseline"]
    assert baseline.by_seed == {0: 0.70}
    assert baseline.unfinished == ["NaN", "RuntimeError: boom"]


def study_runs() -> list[tuple[list[str], dict]]:
    """A4 clearly better than A1 on 3 seeds, A6 clearly worse, A2 with one seed, A5 failed."""
    runs = []
    for seed, (a1, a4, a6) in enumerate(
        [(0.73, 0.77, 0.70), (0.74, 0.78, 0.71), (0.72, 0.77, 0.69)]
    ):
        runs += [(A1, done(seed, a1)), (A4, done(seed, a4)), (A6, done(seed, a6))]
    runs.append((CNN2, done(0, 0.70)))
    runs += [(A5_LINEAR, unfinished(0, "failed", NO_WEIGHTS)),
             (A5_PARTIAL, unfinished(0, "failed", NO_WEIGHTS))]  # fmt: skip
    return runs


def verdicts() -> dict[str, evidence.ClaimResult]:
    parts = evidence.collect(study_runs())
    return {result.claim.text: result for result in evidence.judge_all(parts)}


def test_claim_verdicts_supported_contradicted_unresolved_not_run() -> None:
    results = verdicts()
    assert results["BatchNorm raises test accuracy over the baseline"].verdict == "supported"
    assert results["Augmentation raises test accuracy"].verdict == "contradicted"
    depth = results["Accuracy rises with depth from 2 to 5 conv layers"]
    assert depth.verdict == "not run"  # 4 and 5 conv layers were not run
    assert "A2 4 conv" in depth.evidence()
    transfer = results["Partial fine-tuning beats a linear probe (ImageNet ResNet-18)"]
    assert transfer.verdict == "not run" and "needs ImageNet weights" in transfer.evidence()
    batchnorm = results["BatchNorm raises test accuracy over the baseline"]
    assert "A4 BatchNorm − A1 baseline: 4.33 [" in batchnorm.evidence()


def test_a_single_paired_seed_is_not_resolved() -> None:
    parts = evidence.collect([(A1, done(0, 0.73)), (A4, done(0, 0.80))])
    result = evidence.judge(evidence.CLAIMS[5], parts)
    assert result.claim.text.startswith("BatchNorm")
    assert result.verdict == "not resolved"


def test_a7_constant_is_the_baseline_itself() -> None:
    parts = evidence.collect([(A1, done(0, 0.73))])
    assert parts["A7 constant"].by_seed == {0: 0.73}


def test_report_shows_intervals_claims_and_not_run_parts(tmp_path: Path) -> None:
    for index, (overrides, results) in enumerate(study_runs()):
        run = tmp_path / "study" / f"run{index}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
        seed = results["seed"]
        results = {**results, "overrides": [*overrides, f"seed={seed}"]}
        (run / "results.json").write_text(json.dumps(results))
    written = write_report([tmp_path / "study"], tmp_path / "out", command="make study-a")
    names = {path.name for path in written}
    assert {"report.md", "report.csv", "report.json", "part_A4.png", "part_A6.png"} <= names
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Runs made by: `make study-a`" in markdown
    assert "| BatchNorm raises test accuracy over the baseline | A4: 77.71 vs A1 73.79 | " \
           "**supported** |" in markdown  # fmt: skip
    assert "not run (needs ImageNet weights)" in markdown
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    by_claim = {c["claim"]: c["verdict"] for c in summary["claims"]}
    assert by_claim["Augmentation raises test accuracy"] == "contradicted"
    a1 = summary["parts"]["A1 baseline"]["estimate"]
    assert a1["n"] == 3 and a1["mean"] == pytest.approx(0.73)
