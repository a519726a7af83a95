"""Nothing lost, nothing misrecorded: a folder never changes hands silently, writes are
whole or absent, SLURM continuation follows one rule, every bad input is refused before
work, nothing is dropped without a word — each at the level a user meets it: the command,
its exit code, the first line it prints, and the files it leaves."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnn_study.errors import CnnStudyError, DivergedError
from cnn_study.rundir import REPLACED, find_runs
from cnn_study.train import build, run
from tests.conftest import NO_FIGURES, command_here, write_class_tree
from tests.test_reliability import HELPERS, results
from tests.test_train import cli, scalars

TINY = ("data=fake", "data.train_size=64", "trainer=cpu", "trainer.max_epochs=2", *NO_FIGURES)


def hashes(folder: Path) -> dict[str, str]:
    """Every file below `folder` (locks aside) with the hash of its bytes."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".run.lock"]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def first_error(output: str) -> str:
    return next(line for line in output.splitlines() if "error" in line.lower())


# 1. The same command into a folder that holds a run.
def test_a_folder_with_a_run_is_refused_or_started_over_never_retrained(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert cli(*TINY, f"hydra.run.dir={folder}", cwd=tmp_path).returncode == 0
    before = hashes(folder)
    again = cli(*TINY, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert again.returncode == 2
    message = first_error(again.stderr)
    assert f"{folder} holds a completed run (seed 0)" in message
    assert "resume=auto" in message and "start_over=true" in message
    assert hashes(folder) == before  # nothing rewritten, nothing added (.hydra included)

    over = cli(*TINY, "start_over=true", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert over.returncode == 0, over.stderr[-2000:]
    (moved,) = folder.glob(f"{REPLACED}*")
    assert hashes(moved) == {k: v for k, v in before.items()}  # the old run, whole
    assert [r.path for r in find_runs([folder])] == [folder]  # reports see the new one only
    assert len(scalars(folder)["val/acc"]) == 2 and len(scalars(folder)["lr"]) == 2


# 2. resume with settings that differ from the recorded run.
def test_resume_with_other_settings_is_refused_naming_the_keys(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    stop = ("+callbacks.stop._target_=tests.helpers.SignalAtEpoch",
            "+callbacks.stop.signal_name=SIGTERM", "+callbacks.stop.epoch=1")  # fmt: skip
    lr = "optimizer.lr=0.003"
    stopped = cli(*TINY, lr, *stop, f"hydra.run.dir={folder}", cwd=tmp_path, env=HELPERS)
    assert stopped.returncode == 143 and results(folder)["status"] == "interrupted"
    before = hashes(folder)
    changed = cli(*TINY, "optimizer.lr=0.1", *stop, "resume=auto", f"hydra.run.dir={folder}",
                  cwd=tmp_path, env=HELPERS)  # fmt: skip
    assert changed.returncode == 2
    assert "made with other settings (optimizer.lr: differs)" in first_error(changed.stderr)
    assert hashes(folder) == before


# 3. A full disk while a checkpoint is written.
def test_a_full_disk_leaves_no_truncated_checkpoint_and_the_run_continues(
    tmp_path: Path, compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third checkpoint write (epoch 1) finds the disk full after half its bytes: the
    run ends `failed` with one line naming the file and the space left, no file under a
    final name is truncated, no temporary file stays; once there is space, resume=auto
    continues from epoch 0's checkpoint (no `-v1` beside a corrupt one)."""
    folder = tmp_path / "run"
    writes = []
    real = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:
        if ".ckpt." in path.name:
            writes.append(path)
            if len(writes) == 3:
                real(path, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(CnnStudyError, match=r"no space left on the disk of .*\.ckpt \(.* free"):
        run(compose_cfg(*TINY, output_dir=folder))
    monkeypatch.undo()
    saved = results(folder)
    assert saved["status"] == "failed" and "no space left on the disk of" in saved["error"]
    assert not list(folder.rglob("*.tmp"))
    for path in (folder / "checkpoints").glob("*.ckpt"):
        assert torch.load(path, weights_only=False)["epoch"] == 0  # whole, epoch 0's
    assert run(compose_cfg(*TINY, "resume=auto", output_dir=folder))["status"] == "completed"
    assert not list((folder / "checkpoints").glob("*-v1.ckpt"))
    assert results(folder)["epochs"] == 2 and len(scalars(folder)["val/acc"]) == 2


def test_a_real_full_disk_on_a_small_tmpfs(tmp_path: Path, compose_cfg) -> None:
    """The same on a real file system: a 12 MiB tmpfs holds the first 7.5 MB checkpoint,
    not the second. (Needs the right to mount, as root in a container; skipped without.)"""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"no tmpfs here: {mounted.stderr.strip()[:100]}")
    try:
        folder = disk / "run"
        with pytest.raises(CnnStudyError, match=r"no space left on the disk of .*\.ckpt"):
            run(compose_cfg(*TINY, output_dir=folder))
        assert results(folder)["status"] == "failed"
        assert not list(folder.rglob("*.tmp"))
        for path in (folder / "checkpoints").glob("*.ckpt"):
            torch.load(path, weights_only=False)  # whole: no truncated file under its name
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# 4. A requeued SLURM job without SLURM_NTASKS (a plain sbatch).
def test_a_requeued_sbatch_job_continues_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    kill = ("+callbacks.kill._target_=tests.helpers.KillAfterEpoch", "+callbacks.kill.epoch=0")
    slurm = {**HELPERS, "SLURM_JOB_ID": "9191", "SLURM_RESTART_COUNT": "0"}
    assert "SLURM_NTASKS" not in os.environ
    killed = cli(*TINY, *kill, f"hydra.run.dir={folder}", cwd=tmp_path, env=slurm)
    assert killed.returncode == -signal.SIGKILL
    requeued = cli(
        *TINY,
        *kill,
        f"hydra.run.dir={folder}",
        cwd=tmp_path,
        env={**slurm, "SLURM_RESTART_COUNT": "1"},
    )  # the same command
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert results(folder)["epochs"] == 2
    assert len(scalars(folder)["val/acc"]) == 2  # epoch 0 once, epoch 1 once


# 5. and 13. A stopped sweep continues with the command it prints.
def test_a_stopped_sweep_continues_with_the_printed_command(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    stop = ("+callbacks.stop._target_=tests.helpers.SignalInSeed",
            "+callbacks.stop.signal_name=SIGTERM", "+callbacks.stop.seed=1")  # fmt: skip
    args = ("-m", *TINY, "seed=0,1,2", f"hydra.sweep.dir={sweep}")
    stopped = cli(*args, *stop, cwd=tmp_path, env=HELPERS)
    assert stopped.returncode == 143
    hint = f"resume=auto hydra.sweep.dir={sweep}"
    assert hint in stopped.stdout + stopped.stderr
    assert "resume=true hydra.run.dir" not in stopped.stdout + stopped.stderr
    for resume in ("resume=true", "resume=auto"):  # README's old one, and the printed one
        done = cli(*args, *stop, resume, cwd=tmp_path, env=HELPERS)
        assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["status_counts"] == {"completed": 3}


# 6. A failed prediction leaves no CSV to block the next one.
def test_a_failed_prediction_leaves_no_csv(tmp_path: Path, compose_cfg, image_folder: Path) -> None:
    from cnn_study.predict import main as predict

    best = run(compose_cfg(*TINY, output_dir=tmp_path / "run"))["checkpoint_best"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    target = tmp_path / "predictions.csv"
    assert predict([f"ckpt={best}", f"images={broken}", f"output={target}"]) == 2
    assert not target.exists() and not list(tmp_path.glob(".predictions.csv.*"))
    assert predict([f"ckpt={best}", f"images={image_folder}", f"output={target}"]) == 0


# 7. and 8. Bad study files: one line, exit 2, before any job.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title: x\nparts: [\n", "line 3, column 1: YAML syntax"),
        ("- a\n- b\n", "a study file is a mapping (title, seeds, parts, claims, …), not a list"),
        ("title: x\nparts:\n  - {name: a, overrides: [], published: {test/acc: 80}}\n",
         "parts[0].published.test/acc=80: a proportion, in [0, 1]"),
        ("title: x\nseeds: [0, 1, 2]\nrun: {until_resolved: true, max_seeds: 2}\n"
         "parts:\n  - {name: a, overrides: []}\n", "study.max_seeds=2: below the 3 seeds"),
        ("title: x\nparts:\n  - {name: a, overrides: [regularization.dropout=1.5]}\n",
         "parts[0].overrides (a): regularization.dropout=1.5: must be a number in [0, 1)"),
        ("title: x\nparts:\n  - {name: a, overrides: [optimizer.lr=abc]}\n",
         "parts[0].overrides (a): optimizer.lr='abc': must be a number > 0"),
        ("title: x\nparts:\n  - {name: a, overrides: [+trainer.max_epoch=3]}\n",
         "did you mean 'max_epochs'?"),
    ],
    ids=["syntax", "list", "published", "max_seeds", "range", "type", "key"],
)  # fmt: skip
def test_a_bad_study_file_is_one_line_before_any_job(
    text: str, expected: str, tmp_path: Path, capsys
) -> None:
    from cnn_study.study.__main__ import main as study

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert study([f"study={path}", f"study.dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err, err
    assert not (tmp_path / "out").exists()


# 9. and 10. Bad input to a run or a tool: one line, exit 2.
@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("optimizer.lr=abc", "optimizer.lr='abc': must be a number > 0"),
        ("seed=-1", "seed=-1: must be an integer in [0, 4294967295]"),
        ("experiment=a2_depth", "declares a sweep (arch=cnn2,cnn4,cnn5)"),
        ("optimizer.weight_decya=0.1", "did you mean 'optimizer.weight_decay'?"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(argument: str, expected: str, tmp_path: Path,
                                            monkeypatch, capsys) -> None:  # fmt: skip
    from cnn_study.__main__ import cli as app

    folder = tmp_path / "run"
    code, output = command_here(app, ["data=fake", argument, f"hydra.run.dir={folder}"],
                                tmp_path, monkeypatch, capsys)  # fmt: skip
    assert code == 2 and expected in output, output[-2000:]
    assert "Traceback" not in output and not folder.exists()


def test_tools_onto_an_impossible_output_are_one_line(
    tmp_path: Path, compose_cfg, image_folder: Path, capsys
) -> None:
    from cnn_study.explain import main as explain
    from cnn_study.predict import main as predict
    from cnn_study.study.__main__ import main as study
    from cnn_study.study.report import main as report

    best = run(compose_cfg(*TINY, output_dir=tmp_path / "run"))["checkpoint_best"]
    capsys.readouterr()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(json.dumps({"title": "t", "parts": [{"name": "a", "overrides": []}]}))
    for command in (
        lambda: predict([f"ckpt={best}", f"images={image_folder}", f"output={a_file}/p.csv"]),
        lambda: explain([f"ckpt={best}", f"images={image_folder}", f"output_dir={a_file}/x"]),
        lambda: report([str(tmp_path / "run"), "--out", f"{a_file}/report"]),
        lambda: study([f"study={tiny}", f"study.dir={a_file}/study"]),
    ):
        assert command() == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(a_file) in err, err
        assert "Not a directory" in err or "File exists" in err, err


def test_an_unreadable_class_folder_is_one_line(tmp_path: Path, compose_cfg, monkeypatch) -> None:
    """(As root, permissions do not bar reading: the denial is made by hand.)"""
    root = tmp_path / "photos"
    write_class_tree(root, ["cats", "dogs"], per_class=6, seed=1)
    real = Path.iterdir

    def denied(path: Path):
        if path.name == "dogs":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "iterdir", denied)
    cfg = compose_cfg("data=image_folder", f"data.root={root}", "trainer=cpu",
                      output_dir=tmp_path / "run")  # fmt: skip
    with pytest.raises(PermissionError):
        run(cfg)
    saved = results(tmp_path / "run")  # what a run records, and prints in one line (exit 2)
    assert saved["status"] == "rejected"
    assert saved["error"].endswith("dogs: permission denied")


# 11. Nothing dropped without a word.
def test_nested_images_and_broken_symlinks_are_named(tmp_path: Path, compose_cfg, caplog) -> None:
    root = tmp_path / "photos"
    write_class_tree(root, ["cats", "dogs"], per_class=6, seed=1)
    nested = root / "dogs" / "more"
    nested.mkdir()
    Image.new("RGB", (32, 32)).save(nested / "x.png")
    (root / "cats" / "gone.png").symlink_to(tmp_path / "missing.png")
    cfg = compose_cfg("data=image_folder", f"data.root={root}", "trainer=cpu")
    build(cfg)
    warned = caplog.text
    assert "more (a sub-folder: classes are one level deep" in warned
    assert "gone.png (a dangling or looping symlink)" in warned


# 12. Per-class figures only for classes the split holds.
def test_a_class_missing_from_the_test_split_gets_no_auroc(tmp_path: Path, compose_cfg,
                                                            caplog) -> None:  # fmt: skip
    root = tmp_path / "photos"
    write_class_tree(root, ["cats", "dogs"], per_class=12, seed=1)
    owls = root / "owls"
    owls.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(owls / "only.png")
    folder = tmp_path / "run"
    saved = run(compose_cfg("data=image_folder", f"data.root={root}", "trainer=cpu",
                            "trainer.max_epochs=1", *NO_FIGURES, output_dir=folder))  # fmt: skip
    assert "test/auroc/owls" not in saved
    present = [saved[f"test/auroc/{name}"] for name in ("cats", "dogs")]
    assert saved["test/auroc"] == pytest.approx(sum(present) / 2, abs=1e-6)
    assert "the test split holds no image of owls" in caplog.text


# 13. A run that diverged in its first epoch says there is no checkpoint.
def test_a_run_diverged_in_epoch_0_says_no_checkpoint(tmp_path: Path, compose_cfg) -> None:
    poison = ("+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch",
              "+callbacks.poison.epoch=0")  # fmt: skip
    with pytest.raises(DivergedError, match="no epoch finished, so there is no checkpoint"):
        run(compose_cfg(*TINY, *poison, output_dir=tmp_path / "run"))


def test_a_study_stopped_points_to_the_study_and_a_diverged_part_says_so(
    tmp_path: Path,
) -> None:
    study = {
        "title": "stops", "protocol": list(TINY), "seeds": [0, 1],
        "parts": [{"name": "fine", "overrides": []},
                  {"name": "broken", "overrides": [
                      "+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch",
                      "+callbacks.poison.epoch=0"]}],
        "claims": [{"text": "broken beats fine", "order": ["broken", "fine"]}],
    }  # fmt: skip
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    env = {**os.environ, **HELPERS, "CNN_STUDY_OUTPUT": str(tmp_path / "out")}
    command = [sys.executable, "-m", "cnn_study.study", "study=s.yaml"]
    stop = ["+callbacks.stop._target_=tests.helpers.SignalInSeed",
            "+callbacks.stop.signal_name=SIGTERM", "+callbacks.stop.seed=1"]  # fmt: skip
    stopped = subprocess.run([*command, *stop], capture_output=True, text=True, cwd=tmp_path,
                             env=env, timeout=600)  # fmt: skip
    assert stopped.returncode != 0
    output = stopped.stdout + stopped.stderr
    assert "Continue the study with the same command: python -m cnn_study.study" in output
    assert "resume=true hydra.run.dir" not in output
    # the study's own folder is refused to a changed command: a new folder, without the stop
    done = subprocess.run([*command, "study.dir=fresh"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "fresh" / "report.json").read_text())
    assert report["parts"]["broken"]["status"].startswith("diverged:")
    (claim,) = report["claims"]
    assert (
        claim["verdict"] == "not run"
        and "broken diverged, so the claim is not judged" in (claim["evidence"])
    )
