"""One live run per folder: a second process on a live run's folder is refused and
touches nothing; a lock whose process is gone is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from cnn_study import runlock
from cnn_study.errors import CnnStudyError
from cnn_study.rundir import RESULTS_FILE
from cnn_study.runlock import LOCK_FILE, FolderBusyError, acquire, release
from cnn_study.study.report import write_report
from cnn_study.train import run
from tests.conftest import NO_FIGURES
from tests.test_train import cli

QUICK = ("data=fake", "debug=limit", *NO_FIGURES)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def write_lock(folder: Path, **holder: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"started": "earlier", **holder}))


@pytest.fixture
def live_process():
    """A process of this host that stays alive during the test (the other run)."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def test_a_second_run_in_a_live_runs_folder_is_refused_touching_nothing(
    tmp_path: Path, live_process: subprocess.Popen
) -> None:
    folder = tmp_path / "run"
    write_lock(folder, pid=live_process.pid, host=socket.gethostname())
    (folder / RESULTS_FILE).write_text('{"status": "running", "seed": 0}')
    before = snapshot(folder)

    second = cli(*QUICK, "seed=1", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"run folder {folder} is in use by process {live_process.pid}" in second.stderr
    assert snapshot(folder) == before  # no .hydra/, no log, no results.json rewritten

    live_process.kill()
    live_process.wait()  # the holder is gone: its lock is stale and taken over; its run,
    # another seed's, is not continued: it moves aside (start_over)
    again = cli(*QUICK, "seed=1", "start_over=true", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "taking over the run lock" in again.stderr + again.stdout
    assert json.loads((folder / RESULTS_FILE).read_text())["status"] == "completed"
    assert not (folder / LOCK_FILE).exists()  # released when the run ended


def test_a_sweep_job_on_a_busy_folder_leaves_the_holders_record(
    compose_cfg, tmp_path: Path, live_process: subprocess.Popen
) -> None:
    folder = tmp_path / "job"
    write_lock(folder, pid=live_process.pid, host=socket.gethostname())
    (folder / RESULTS_FILE).write_text('{"status": "running", "seed": 0}')
    with pytest.raises(FolderBusyError, match="is in use by process"):
        run(compose_cfg(*QUICK, output_dir=folder))
    assert json.loads((folder / RESULTS_FILE).read_text()) == {"status": "running", "seed": 0}


def test_whose_lock_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other_host = tmp_path / "other"
    write_lock(other_host, pid=1, host="node-17")
    with pytest.raises(FolderBusyError, match=r"on node-17 .* delete .*\.run\.lock"):
        acquire(other_host)  # cannot be checked from here: refused, the way out named

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    requeued = tmp_path / "requeued"
    write_lock(requeued, pid=1, host="node-17", slurm_job_id="4242", slurm_restart=0)
    with pytest.raises(FolderBusyError):  # a live process of this same attempt, elsewhere
        acquire(requeued)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    acquire(requeued)  # the same SLURM job, restarted on another node: taken over
    assert json.loads((requeued / LOCK_FILE).read_text())["slurm_job_id"] == "4242"
    release(requeued)
    assert not (requeued / LOCK_FILE).exists()

    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP rank > 0 shares its rank 0's folder
    assert not runlock.is_first_process()
    acquire(other_host)


def test_a_run_refused_for_its_data_is_rejected_and_no_configuration(
    compose_cfg, tmp_path: Path
) -> None:
    """A run whose data root does not exist ends `rejected`; the report of the output root
    lists it under "Rejected before training", not as a failed configuration."""
    out = tmp_path / "out"
    assert run(compose_cfg(*QUICK, output_dir=out / "good"))["status"] == "completed"
    refused = out / "refused"
    missing = compose_cfg("data=image_folder", f"data.root={tmp_path / 'no-photos'}",
                          "debug=limit", *NO_FIGURES, output_dir=refused)  # fmt: skip
    with pytest.raises(CnnStudyError, match="no-photos does not exist"):
        run(missing)
    assert json.loads((refused / RESULTS_FILE).read_text())["status"] == "rejected"

    write_report([out], tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [c["status"] for c in summary["configurations"]] == ["completed"]
    assert summary["rejected"] == [str(refused)]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "no-photos does not exist" in markdown.split("## Rejected before training")[1]
