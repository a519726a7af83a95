"""The run directory contract: what a run leaves behind and how other tools read it.

A run directory holds `results.json`, written atomically when the run starts (status
"running") and again when it ends ("completed", or "diverged" / "failed" / "interrupted"
/ "rejected" — a config or data error before any checkpoint — with the error),
`config.yaml` (the resolved config), `checkpoints/` and `tensorboard/`. Training writes
it; the report, the sweep summary and the notebook read it, only here.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

from cnn_study.errors import DivergedError, interruption, user_error

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
DEFAULT_OBJECTIVE = ("best_val/acc", "maximize")
TENSORBOARD_DIR = "tensorboard"
RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED, REJECTED = (
    "running", "completed", "diverged", "failed", "interrupted", "rejected",
)  # fmt: skip


def global_rank() -> int:
    """This process's DDP rank: Lightning's when it is loaded (it sets the rank of the
    processes it starts), else 0 — a process that never imported Lightning trains nothing."""
    utilities = sys.modules.get("lightning.pytorch.utilities")
    return int(utilities.rank_zero_only.rank) if utilities is not None else 0


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file.

    Under DDP only global rank 0 writes (every rank runs the same job, with the same data)."""
    if global_rank() != 0:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    write_json_atomic(run_dir / RESULTS_FILE, results)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when there is no such file (yet)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def read_results(run_dir: Path) -> dict[str, Any]:
    """A run directory's results.json, or {} when there is none yet."""
    return read_json(run_dir / RESULTS_FILE)


def ended_status(error: BaseException, trained: bool = True) -> str:
    """The status of a run that ended with `error`; `trained`: whether it had saved a
    checkpoint. A user error before any checkpoint (a missing data root, a one-class
    folder, absent weights) is "rejected": the configuration never trained."""
    if interruption(error):
        return INTERRUPTED
    if isinstance(error, DivergedError):
        return DIVERGED
    return REJECTED if user_error(error) is not None and not trained else FAILED


@dataclass
class Run:
    """One run directory: its results and the overrides that made it."""

    path: Path
    results: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.results.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def overrides(self) -> list[str]:
        return list(self.results.get("overrides", []))

    @property
    def objective(self) -> tuple[str, str]:
        """(metric, direction) the run was configured to optimise; runs from before the
        objective was recorded optimised best_val/acc."""
        recorded = self.results.get("objective") or {}
        return recorded.get("metric", DEFAULT_OBJECTIVE[0]), recorded.get(
            "direction", DEFAULT_OBJECTIVE[1]
        )

    @property
    def objective_value(self) -> float | None:
        value = self.results.get(self.objective[0])
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def configuration(self) -> tuple[str, ...]:
        """The overrides without seed and resume: runs sharing it are repeats of one
        configuration."""
        return tuple(sorted(o for o in self.overrides
                            if not o.lstrip("+~").startswith(("seed=", "resume="))))  # fmt: skip

    @cached_property
    def _board(self) -> Any:
        """TensorBoard's own reader of the run's event files (None without any)."""
        board = self.path / TENSORBOARD_DIR
        if not board.is_dir():
            return None
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(board))
        events.Reload()
        return events

    def _events(self, tag: str) -> list[Any]:
        board = self._board
        return board.Scalars(tag) if board and tag in board.Tags()["scalars"] else []

    def curve(self, tag: str) -> list[float]:
        """A scalar's values per logged step, read with TensorBoard's own reader."""
        return [event.value for event in self._events(tag)]

    def epoch_seconds(self, tag: str = "val/acc") -> list[float]:
        """Wall seconds of each epoch from TensorBoard's event times: from the log's first
        event to the first epoch's `tag`, then between consecutive epochs' `tag`."""
        events = self._events(tag)
        if not events or self._board is None:
            return []
        times = [self._board.FirstEventTimestamp(), *(event.wall_time for event in events)]
        return [later - earlier for earlier, later in pairwise(times)]


def find_runs(folders: list[Path]) -> list[Run]:
    """Every run below `folders`, in path order."""
    files = sorted({f for folder in folders for f in folder.rglob(RESULTS_FILE)})
    return [Run(f.parent, json.loads(f.read_text())) for f in files]


def describe_runs(folders: list[Path]) -> list[str]:
    """One line per run below `folders`: status, test accuracy, training time and the
    seconds of each epoch with the slowest over the first (a run that slows down shows)."""
    lines = []
    for run in find_runs(folders):
        seconds = run.epoch_seconds()
        accuracy = run.results.get("test/acc")
        parts = [f"{run.path}: {run.status}"]
        if isinstance(accuracy, float):
            parts.append(f"test acc {accuracy:.4f}")
        parts.append(f"train {run.results.get('train_time_s')} s")
        if seconds:
            parts.append(f"epochs (s) {' '.join(f'{t:.1f}' for t in seconds)}")
            parts.append(f"max/first {max(seconds) / seconds[0]:.2f}")
        lines.append(", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m cnn_study.rundir <folder> ...`: what the runs below the folders say."""
    folders = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not folders or str(folders[0]) in ("-h", "--help"):
        print(main.__doc__)
        return 0
    lines = describe_runs(folders)
    print("\n".join(lines) if lines else f"no {RESULTS_FILE} below {', '.join(map(str, folders))}")
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
