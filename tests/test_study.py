"""Studies as data: a study file runs as one Hydra multirun, continues without retraining,
keeps other runs out of its parts, adds seeds until its claims resolve, and refuses bad
files in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnn_study.study.__main__ import main as study_main
from cnn_study.study.__main__ import prepare
from cnn_study.study.definition import bundled_studies, read_study, study_path
from cnn_study.study.membership import HYDRA_CONFIG, PARTS_FILE, part_configs
from cnn_study.study.report import write_report
from tests.conftest import command_here, execute_report_notebook

# Every job: fake data, one short epoch, no test-end figures (seconds each).
PROTOCOL = ["data=fake", "debug=limit", "~callbacks.gradcam", "~callbacks.evaluation_figures"]


def write_study(path: Path, **changes: object) -> Path:
    """Two parts (constant vs step LR) × seeds 0, 1 and one claim; `changes` replace keys."""
    study = {
        "title": "tiny study",
        "protocol": PROTOCOL,
        "seeds": [0, 1],
        "parts": [
            {"name": "constant", "overrides": ["scheduler=constant"],
             "published": {"test/acc": 0.5}},
            {"name": "step", "overrides": ["scheduler=step"], "baseline": "constant"},
        ],
        "claims": [{"text": "step beats constant", "order": ["step", "constant"]}],
    } | changes  # fmt: skip
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_study(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNN_STUDY_OUTPUT": str(cwd / "out")}
    return subprocess.run(
        [sys.executable, "-m", "cnn_study.study", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600, env=env,
    )  # fmt: skip


def run_study_here(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    """`python -m cnn_study.study` in this process: its output."""
    env = {"CNN_STUDY_OUTPUT": str(cwd / "out")}
    code, output = command_here(lambda: study_main(list(args)), list(args), cwd, monkeypatch,
                                capsys, env)  # fmt: skip
    assert code == 0, output[-3000:]
    return output


def results(folder: Path) -> dict[str, dict]:
    return {
        str(path.parent.relative_to(folder)): json.loads(path.read_text())
        for path in sorted(folder.rglob("results.json"))
    }


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run once by `python -m cnn_study.study`; its folder."""
    cwd = tmp_path_factory.mktemp("study")
    write_study(cwd / "tiny.yaml")
    first = run_study("study=tiny.yaml", cwd=cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    return cwd / "out" / "studies" / "tiny"


def test_a_study_runs_as_one_multirun_and_continues_without_retraining(
    tiny_study, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = tiny_study
    jobs = results(folder)
    assert set(jobs) == {"constant/seed0", "constant/seed1", "step/seed0", "step/seed1"}
    assert all(job["status"] == "completed" for job in jobs.values())
    assert [p.name for p in folder.glob("multirun.yaml")] == ["multirun.yaml"]  # one sweep
    assert {job["seed"] for job in jobs.values()} == {0, 1}
    assert all((folder / name / "test_predictions.npz").is_file() for name in jobs)
    report = (folder / "report.md").read_text()
    claim = next(line for line in report.splitlines() if line.startswith("| step beats"))
    assert any(f"**{verdict}" in claim for verdict in ("supported", "contradicted", "not res"))
    assert "churn" in claim and "McNemar" in claim
    assert (folder / "family_constant.png").is_file() or (folder / "family_step.png").is_file()

    checkpoints = {p: p.stat().st_mtime_ns for p in folder.rglob("*.ckpt")}
    again = run_study_here(
        "study=tiny.yaml", cwd=folder.parents[2], monkeypatch=monkeypatch, capsys=capsys
    )
    assert "4 jobs of this batch already completed" in again
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.ckpt")} == checkpoints
    assert results(folder) == jobs


def test_a_run_of_another_config_in_the_folder_is_never_pooled(tiny_study, tmp_path: Path) -> None:
    """A run with the part's overrides plus trainer.max_epochs=2 (the old subset test
    pooled it) is listed under other runs and changes no estimate or verdict."""
    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    before = json.loads((folder / "report.json").read_text())
    extra = folder / "extra_run"
    shutil.copytree(folder / "step" / "seed0", extra)
    config = yaml.safe_load((extra / HYDRA_CONFIG).read_text())
    config["trainer"]["max_epochs"] = 2
    (extra / HYDRA_CONFIG).write_text(yaml.safe_dump(config))
    run = json.loads((extra / "results.json").read_text())
    run |= {"overrides": [*run["overrides"], "trainer.max_epochs=2"], "test/acc": 0.99,
            "seed": 7}  # fmt: skip
    (extra / "results.json").write_text(json.dumps(run))

    write_report([folder], folder)
    after = json.loads((folder / "report.json").read_text())
    assert after["other_runs"] == [str(extra)]
    assert after["parts"]["step"]["seeds"] == [0, 1]
    assert after["parts"]["step"]["estimate"] == before["parts"]["step"]["estimate"]
    assert [c["verdict"] for c in after["claims"]] == [c["verdict"] for c in before["claims"]]
    assert "| extra_run |" in (folder / "report.md").read_text()


def test_until_resolved_adds_seeds_to_the_claims_parts_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Two parts a whisker apart (lr 1e-3 vs 1.000001e-3) never resolve: they get seeds
    up to study.max_seeds in rounds; a part outside the claim keeps its seeds."""
    write_study(
        tmp_path / "close.yaml",
        seeds=[0, 1],
        parts=[
            {"name": "lr a", "overrides": ["optimizer.lr=0.001"]},
            {"name": "lr b", "overrides": ["optimizer.lr=0.001000001"], "baseline": "lr a"},
            {"name": "other", "overrides": ["scheduler=step"]},
        ],
        claims=[{"text": "b beats a", "order": ["lr b", "lr a"]}],
    )
    run_study_here("study=close.yaml", "study.until_resolved=true", "study.max_seeds=4",
                   cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    folder = tmp_path / "out" / "studies" / "close"
    seeds = {}
    for job in results(folder):
        part, seed = job.split("/")
        seeds.setdefault(part, set()).add(int(seed.removeprefix("seed")))
    assert seeds == {"lr_a": {0, 1, 2, 3}, "lr_b": {0, 1, 2, 3}, "other": {0, 1}}
    looks = json.loads((folder / "looks.json").read_text())["looks"]
    assert [look["targets"] for look in looks] == [{"lr a": 4, "lr b": 4}, {}]
    report = (folder / "report.md").read_text()
    assert "**not resolved after 4 seeds (the budget)**" in report
    assert "Verdicts at look 2 of 3 planned" in report
    assert "0.01667 at each of 3 planned looks" in report
    assert [look["level"] for look in looks] == [pytest.approx(0.05 / 3)] * 2


def test_a_folder_keeps_the_error_control_of_its_first_look(
    tiny_study, tmp_path: Path, capsys
) -> None:
    """The tiny study recorded its look at α = 0.05, one look: a second command at
    another α, or with looks added, would spend more than α; it is refused in one line
    naming the keys, before any job."""
    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    looks = json.loads((folder / "looks.json").read_text())
    assert looks["plan"] == {"alpha": 0.05, "looks": 1, "max_seeds": None}
    assert [look["look"] for look in looks["looks"]] == [1]
    path = write_study(tmp_path / "tiny.yaml")
    for setting, named in (("study.alpha=0.01", "alpha=0.01 (recorded 0.05)"),
                           ("study.until_resolved=true", "looks=3 (recorded 1)")):  # fmt: skip
        code = study_main([f"study={path}", f"study.dir={folder}", setting])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert named in err and "study.dir=" in err
    assert json.loads((folder / "looks.json").read_text()) == looks


def test_runs_csv_judges_the_study_again_without_its_folders(tiny_study, tmp_path: Path) -> None:
    """`--runs runs.csv --study study.yaml`: the same parts, verdicts and p-values as the
    report made from the run folders."""
    from cnn_study.study.report import main as report_main

    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    write_report([folder], folder)
    from_folders = json.loads((folder / "report.json").read_text())
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(folder / "runs.csv", again / "runs.csv")
    shutil.copy(folder / "study.yaml", again / "study.yaml")
    shutil.rmtree(folder)  # nothing of the folders is left
    code = report_main(["--runs", str(again / "runs.csv"), "--study", str(again / "study.yaml")])
    assert code == 0
    from_runs = json.loads((again / "report.json").read_text())
    assert from_runs["claims"] == from_folders["claims"]
    assert from_runs["parts"] == from_folders["parts"]
    assert from_runs["study"]["error_control"] == from_folders["study"]["error_control"]
    assert "(judged from the table of runs" in (again / "report.md").read_text()


def bad_study(tmp_path: Path, capsys: pytest.CaptureFixture, **changes: object) -> str:
    path = write_study(tmp_path / "bad.yaml", **changes)
    code = study_main([f"study={path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    return err


def test_bad_study_files_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    unknown = bad_study(tmp_path, capsys,
                        claims=[{"text": "x", "order": ["step", "linear"]}])  # fmt: skip
    assert "claims[0].order: unknown part 'linear' (parts: constant, step)" in unknown
    twice = [{"name": "step", "overrides": ["scheduler=step"]}] * 2
    assert "parts[1].name: duplicate part 'step'" in bad_study(tmp_path, capsys, parts=twice)
    wrong = [{"name": "step", "overrides": ["arch=no_such"]}]
    message = bad_study(tmp_path, capsys, parts=wrong, claims=[])
    assert "parts[0].overrides (step):" in message and "no_such" in message
    typo = bad_study(tmp_path, capsys, seedz=[0])
    assert "seedz" in typo
    same = [{"name": "a", "overrides": ["scheduler=step"]},
            {"name": "b", "overrides": ["scheduler=step"]}]  # fmt: skip
    assert "parts 'a' and 'b' are one configuration" in bad_study(
        tmp_path, capsys, parts=same, claims=[]
    )


def test_a_folder_refuses_a_part_with_other_overrides(tiny_study, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    path = write_study(tmp_path / "tiny.yaml")
    code = study_main([f"study={path}", f"study.dir={folder}", "trainer.max_epochs=3"])
    err = capsys.readouterr().err
    assert code == 2 and "ran part 'constant' with" in err and "study.dir=" in err


def test_a_scale_may_change_a_part_that_has_not_run_yet(tiny_study, tmp_path: Path) -> None:
    """Only parts with runs in the folder must keep their overrides: a scale that changes
    a part without runs continues the folder."""
    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    shutil.rmtree(folder / "step")
    path = write_study(tmp_path / "tiny.yaml",
                       scales={"cpu": {"parts": {"step": ["optimizer.lr=0.002"]}}})  # fmt: skip
    study, _, _ = prepare([f"study={path}", f"study.dir={folder}", "study.scale=cpu"])
    assert "optimizer.lr=0.002" in study.job_overrides(study.parts_by_name["step"])
    # A part whose runs stopped before any checkpoint (weights absent) never trained.
    for results_file in (folder / "constant").rglob("results.json"):
        results_file.write_text(json.dumps({"status": "rejected", "error": "no weights"}))
        shutil.rmtree(results_file.parent / "checkpoints")
    changed = {"step": ["optimizer.lr=0.002"], "constant": ["optimizer.lr=0.003"]}
    path = write_study(tmp_path / "tiny.yaml", scales={"cpu": {"parts": changed}})
    prepare([f"study={path}", f"study.dir={folder}", "study.scale=cpu"])


def test_a_new_option_with_a_null_default_keeps_the_runs_in_their_parts(
    tiny_study, tmp_path: Path
) -> None:
    """Runs made by a cnn_study without an option (here: no `regularization.dropout`
    key), and a folder that recorded its part configs with their null entries, stay the
    parts of a newer cnn_study that has the option with a null default."""
    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    recorded = json.loads((folder / PARTS_FILE).read_text())
    for name, config in recorded.items():
        config = json.loads(config)
        config["regularization"]["dropout"] = None  # as an older cnn_study recorded it
        recorded[name] = json.dumps(config, sort_keys=True)
    (folder / PARTS_FILE).write_text(json.dumps(recorded))
    for run_config in folder.rglob(str(HYDRA_CONFIG)):
        config = yaml.safe_load(run_config.read_text())
        del config["regularization"]["dropout"]
        run_config.write_text(yaml.safe_dump(config))
    before = json.loads((folder / "report.json").read_text())

    prepare([f"study={write_study(tmp_path / 'tiny.yaml')}", f"study.dir={folder}"])
    write_report([folder], folder)
    after = json.loads((folder / "report.json").read_text())
    assert after["other_runs"] == []
    assert after["parts"] == before["parts"]


def test_the_bundled_studies_compose_and_name_their_claims_parts() -> None:
    assert {"a", "b", "c"} <= set(bundled_studies())
    for name, scales in (("a", (None, "cpu")), ("b", (None, "cpu")), ("c", (None,))):
        # The protocol and the named CPU scale both compose, each part as a job of the
        # study's sweeper (B5's experiment names its own sweep: it once stopped Study B).
        for scale in scales:
            study = read_study(study_path(name), {"scale": scale})
            configs = part_configs(study)
            assert set(configs) == {p.name for p in study.parts}
            assert study.claims and all(len(c.order) >= 2 for c in study.claims)
    b = read_study(study_path("b"), {"scale": "cpu"})
    b3 = json.loads(part_configs(b)["B3 gap4 BN"])
    assert (b3["arch"]["input_size"], b3["data"]["train_size"]) == (48, 8000)
    assert any(line.startswith("B3 gap4 BN: arch.input_size=48") for line in b.deviations())
    a = read_study(study_path("a"))
    assert len(a.parts) == 19 and a.seeds == [0, 1, 2]
    c = read_study(study_path("c"))
    everything = json.loads(part_configs(c)["C6 all together"])
    assert everything["loss"]["label_smoothing"] == 0.1 and everything["tta"] is not None
    assert everything["mixing"]["cutmix_alpha"] > 0 and "ema" in everything["callbacks"]
    assert everything["scheduler"]["warmup_epochs"] == 1
    assert [claim.metric for claim in c.claims].count("test/ece") == 2
    assert a.parts_by_name["A1 baseline"].published["test/acc"] == pytest.approx(0.7379)


def test_the_notebook_shows_a_study_folder(tiny_study, monkeypatch: pytest.MonkeyPatch) -> None:
    text, images = execute_report_notebook(tiny_study, monkeypatch)
    assert "4 runs, 2 configurations" in text
    assert "| step | completed | 0,1 |" in text and "step beats constant" in text
    counts = re.search(r"'supported': (\d), 'contradicted': (\d), 'not resolved': (\d)", text)
    assert counts is not None and sum(map(int, counts.groups())) == 1  # the one claim judged
    assert images == 1  # one part family: constant and step


def test_the_run_command_points_a_study_to_its_own_command(monkeypatch, capsys) -> None:
    from cnn_study.__main__ import cli

    monkeypatch.setattr(sys, "argv", ["cnn_study", "study=a"])
    with pytest.raises(SystemExit) as stopped:
        cli()
    assert stopped.value.code == 2
    assert "python -m cnn_study.study study=<name>" in capsys.readouterr().err


def test_a_scale_and_a_transfer_part_run_side_by_side_on_joblib(tmp_path: Path) -> None:
    """`checkpoint_from`: the transfer part starts from the source part's best checkpoint of
    the same seed, in a later batch; `study.scale`: its overrides are applied and listed as
    deviations; `hydra/launcher=joblib` runs each batch's jobs in parallel processes."""
    write_study(
        tmp_path / "transfer.yaml",
        parts=[
            {"name": "source", "overrides": ["scheduler=constant"]},
            {"name": "transfer", "overrides": ["finetune=full"], "baseline": "source",
             "checkpoint_from": {"part": "source", "key": "finetune.from_checkpoint"}},
        ],
        claims=[{"text": "transfer beats source", "order": ["transfer", "source"]}],
        scales={"quick": {"description": "smaller steps", "overrides": ["data.batch_size=16"],
                          "parts": {"transfer": ["optimizer.lr=0.0005"]}}},
    )  # fmt: skip
    done = run_study("study=transfer.yaml", "study.scale=quick", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "out" / "studies" / "transfer_quick"
    jobs = results(folder)
    assert set(jobs) == {"source/seed0", "source/seed1", "transfer/seed0", "transfer/seed1"}
    assert all(job["status"] == "completed" for job in jobs.values())
    for seed in (0, 1):
        best = jobs[f"source/seed{seed}"]["checkpoint_best"]
        overrides = jobs[f"transfer/seed{seed}"]["overrides"]
        assert f"finetune.from_checkpoint='{best}'" in overrides
        assert "optimizer.lr=0.0005" in overrides and "data.batch_size=16" in overrides
    # each batch (source, then transfer) went to joblib's worker processes as a whole
    assert (done.stdout + done.stderr).count("Joblib.Parallel(n_jobs=2") == 2
    summary = json.loads((folder / "report.json").read_text())
    assert summary["study"]["deviations"] == ["every part: data.batch_size=16",
                                              "transfer: optimizer.lr=0.0005"]  # fmt: skip
    assert summary["parts"]["transfer"]["seeds"] == [0, 1] and summary["other_runs"] == []
    assert "Scale `quick`: smaller steps" in (folder / "report.md").read_text()


def test_a_claim_with_metrics_names_one_a_part(tmp_path: Path, capsys) -> None:
    short = bad_study(tmp_path, capsys, claims=[
        {"text": "x", "order": ["step", "step"], "metrics": ["train/acc"]}])  # fmt: skip
    assert "claims[0].metrics: 1 metrics for 2 parts of order" in short
    twice = bad_study(tmp_path, capsys, claims=[{"text": "x", "order": ["step", "step"]}])
    assert "claims[0].order: a part twice on one metric" in twice


def test_the_bundled_study_parts_compose_as_recorded() -> None:
    """Every bundled study part, at its protocol and its scales, composes to the config
    `tests/fixtures/study_parts.json` recorded (what a study folder's parts.json holds): a
    refactor of the configs (shared keys moved to a base, a duplicate option removed) must
    not change one, or the runs in existing study folders would stop being their parts'.
    A change meant to: `python tests/fixtures/regenerate_study_parts.py`."""
    from tests.fixtures.regenerate_study_parts import HERE, composed

    recorded = json.loads((HERE / "study_parts.json").read_text())
    assert composed() == recorded
