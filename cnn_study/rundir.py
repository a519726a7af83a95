"""The run directory contract: what a run leaves behind and how other tools read it.

A run directory holds `results.json`, written atomically when the run starts (status
"running") and again when it ends ("completed", or "diverged" / "failed" / "interrupted"
/ "rejected" — a config or data error before any checkpoint — with the error),
`config.yaml` (the resolved config), `checkpoints/` and `tensorboard/`. Training writes
it; the report, the sweep summary and the notebook read it, only here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from cnn_study.errors import CnnStudyError, DivergedError, interruption, user_error

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
# The true label, the predicted label and the class probabilities of every test image.
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


def disk_full(path: Path, error: OSError) -> CnnStudyError:
    """One line for a write that found the disk full: the path and the space left."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    left = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
    return CnnStudyError(
        f"no space left on the disk of {path} ({left}; {error.strerror}): nothing was "
        "written under its name; free space and run again"
    )


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and a rename: a reader (or a run
    that resumes) never finds half a file under the final name, a failed write leaves
    nothing behind; a full disk is one line naming the path and the space left."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise disk_full(path, error) from error
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (`write_bytes_atomic`), so readers never see half a file.

    Under DDP only global rank 0 writes (every rank runs the same job, with the same data)."""
    if global_rank() != 0:
        return
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


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


PREDICTIONS_FILE = "test_predictions.npz"


def save_predictions(run_dir: Path, labels: np.ndarray, probabilities: np.ndarray) -> Path:
    """Write the test predictions of a run (a few hundred KB for CIFAR-10's 10,000)."""
    path = run_dir / PREDICTIONS_FILE
    np.savez_compressed(
        path,
        target=labels.astype(np.int32),
        predicted=probabilities.argmax(axis=1).astype(np.int32),
        probabilities=probabilities.astype(np.float16),
    )
    return path


def load_correct(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(true labels, whether each test image was classified correctly), or None."""
    path = run_dir / PREDICTIONS_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["target"], data["predicted"] == data["target"]


def find_runs(folders: list[Path]) -> list[Run]:
    """Every run below `folders`, in path order; runs moved aside by a start-over
    (`.replaced-<time>/`) are not runs of the folder any more."""
    files = sorted({f for folder in folders for f in folder.rglob(RESULTS_FILE)
                    if not replaced(f.relative_to(folder))})  # fmt: skip
    return [Run(f.parent, json.loads(f.read_text())) for f in files]


# What a folder's run is: who may continue it, and how a start-over keeps it.
REPLACED = ".replaced-"
SETTINGS_IGNORED = ("resume", "start_over", "paths")
FOLDER_KEYS = ("default_root_dir", "dirpath", "save_dir")  # where, not what: the folder's


def replaced(path: Path) -> bool:
    """Whether a path lies in a folder a start-over moved aside."""
    return any(part.startswith(REPLACED) for part in path.parts)


def changed_keys(a: Any, b: Any, skip: Callable[[str], bool] = lambda key: False) -> list[str]:
    """Dotted keys whose values differ between two nested dicts (`skip`: keys not compared)."""

    def walk(x: Any, y: Any, path: str) -> list[str]:
        key = path.rstrip(".")
        if key and skip(key):
            return []
        if isinstance(x, dict) and isinstance(y, dict):
            return [k for name in sorted(set(x) | set(y), key=str)
                    for k in walk(x.get(name), y.get(name), f"{path}{name}.")]  # fmt: skip
        return [key] if x != y else []

    return walk(a, b, "")


def setting_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two configs, where a resume needs them equal:
    what it asks to run, its folders aside."""
    return changed_keys(recorded, wanted, lambda key: key in SETTINGS_IGNORED
                        or key.rsplit(".", 1)[-1] in FOLDER_KEYS)  # fmt: skip


def move_aside(folder: Path) -> Path:
    """Move everything a folder holds (its lock aside) into `<folder>/.replaced-<time>/`:
    a start-over keeps the earlier run, out of the new one's way and out of reports."""
    target = folder / f"{REPLACED}{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
    target.mkdir()
    for entry in list(folder.iterdir()):
        if entry != target and entry.name != ".run.lock" and not entry.name.startswith(REPLACED):
            entry.rename(target / entry.name)
    return target


def claim_folder(
    folder: Path, resume: bool | str, start_over: bool, differences: Callable[[], list[str]]
) -> None:
    """A folder never changes hands silently: one that holds a run is refused unless the
    command continues that very run (`resume`, with the recorded settings: `differences`
    names those that differ) or starts over (`start_over`: the old files move aside)."""
    previous = read_results(folder)
    if not previous:
        return
    status, seed = previous.get("status", "?"), previous.get("seed")
    what = f"a {status} run" + (f" (seed {seed})" if seed is not None else "")
    if start_over:
        log.warning("start_over=true: %s moved aside to %s", what, move_aside(folder))
        return
    if not resume:
        raise CnnStudyError(
            f"{folder} holds {what}; continue it with resume=auto (its settings), or start "
            f"over with start_over=true (its files move to {folder}/{REPLACED}<time>/)"
        )
    changed = differences()
    if changed:
        shown = ", ".join(changed[:6]) + (" …" if len(changed) > 6 else "")
        raise CnnStudyError(
            f"{folder} holds {what} made with other settings ({shown}: "
            f"{'differs' if len(changed) == 1 else 'differ'}); resume with its settings, or "
            "start over with start_over=true"
        )


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
