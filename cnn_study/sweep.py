"""Hydra callback for sweeps: one summary of every job's status when the sweep ends.

Each job records its own outcome in `results.json` (completed, diverged, failed, or
"running" when it was killed); `SweepSummary` gathers them into the sweep directory as
`summary.json` and `summary.md`, so a night's sweep shows at a glance what to re-run.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.table import Table

from cnn_study.console import print_table
from cnn_study.rundir import find_runs, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("status", "test/acc", "best_val/acc", "epochs", "error")


def summarize(sweep_dir: Path) -> dict[str, Any]:
    """Every job below `sweep_dir` with its overrides, status and headline figures."""
    jobs = [
        {"job": str(run.path.relative_to(sweep_dir)), "overrides": run.overrides}
        | {key: run.results.get(key) for key in SUMMARY_KEYS}
        | {"objective": run.objective[0], "objective_value": run.objective_value}
        for run in find_runs([sweep_dir])
    ]
    return {"jobs": jobs, "status_counts": dict(Counter(job["status"] for job in jobs))}


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| job | overrides | status | test acc | best val acc | objective | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for job in summary["jobs"]:
        figures = _figures(job, missing="")
        objective = f"{job['objective']} {figures[2]}" if figures[2] else ""
        note = (job["error"] or "").replace("|", "/").splitlines()[0] if job["error"] else ""
        lines.append(
            f"| {job['job']} | {' '.join(job['overrides'])} | {job['status']} | "
            f"{figures[0]} | {figures[1]} | {objective} | {note} |"
        )
    return "\n".join(lines) + "\n"


def _figures(job: dict[str, Any], missing: str) -> list[str]:
    """A job's test accuracy, best validation accuracy and objective value, as text."""
    return [
        f"{job[key]:.4f}" if isinstance(job[key], float) else missing
        for key in ("test/acc", "best_val/acc", "objective_value")
    ]


def summary_table(summary: dict[str, Any]) -> Table:
    """The sweep's jobs as the table a sweep ends with on the console."""
    table = Table(title="cnn_study sweep")
    for column in ("job", "overrides", "status", "test acc", "best val acc", "objective"):
        table.add_column(column)
    for job in summary["jobs"]:
        table.add_row(job["job"], " ".join(job["overrides"]), job["status"], *_figures(job, "—"))
    return table


_UNFINISHED: list[int] = []  # per finished sweep of this process: jobs that did not end


def unfinished_jobs() -> int:
    """Jobs of this process's last sweep that neither completed nor diverged (0 without
    a sweep): a command that ran such a sweep exits 1 after its summary."""
    return _UNFINISHED[-1] if _UNFINISHED else 0


class SweepSummary(Callback):
    """Writes `summary.json` and `summary.md` into the sweep directory after the last job."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir)
        write_json_atomic(sweep_dir / "summary.json", summary)
        write_text_atomic(sweep_dir / "summary.md", markdown(summary))
        longest = max((len(" ".join(job["overrides"])) for job in summary["jobs"]), default=0)
        print_table(summary_table(summary), longest)
        counts = summary["status_counts"]
        unfinished = sum(n for status, n in counts.items() if status != "completed")
        # A diverged job trained: its divergence is a result (an Optuna search expects
        # some); a failed, interrupted or never-ended job is not.
        _UNFINISHED.append(unfinished - counts.get("diverged", 0))
        report = log.warning if unfinished else log.info
        report("sweep %s: %s; summary: %s", sweep_dir, counts, sweep_dir / "summary.md")
