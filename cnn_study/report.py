"""One table from the runs themselves: `python -m cnn_study.report <run or sweep dir>...`.

Reads every `results.json` below the given folders (and the TensorBoard logs beside them,
with TensorBoard's own reader), groups runs that differ only in `seed`, and writes into the
first folder (or `--out`): `report.md`, `report.csv` (mean ± std over seeds per
configuration, failed runs with their error, the studies' figures beside ours where the
runs are a known study part) and `val_curves.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnn_study.figures import val_curves_figure
from cnn_study.reference import study_figures

METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/auroc")
RESULTS_FILE = "results.json"


@dataclass
class Run:
    """One run directory: its results and the overrides that made it."""

    path: Path
    results: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return list(self.results.get("overrides", []))

    @property
    def configuration(self) -> tuple[str, ...]:
        """The overrides without the seed: runs sharing it are repeats of one configuration."""
        return tuple(sorted(o for o in self.overrides if not o.lstrip("+~").startswith("seed=")))

    def val_curve(self, tag: str) -> list[float]:
        board = self.path / "tensorboard"
        if not board.is_dir():
            return []
        events = EventAccumulator(str(board))
        events.Reload()
        return [e.value for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@dataclass
class Row:
    """A configuration: its completed repeats summarised, and the runs that did not finish."""

    configuration: tuple[str, ...]
    completed: list[Run] = field(default_factory=list)
    unfinished: list[Run] = field(default_factory=list)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = [r.results[metric] for r in self.completed if r.results.get(metric) is not None]
        if not values:
            return None
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), spread

    def mean_of(self, key: str) -> float | None:
        values = [r.results[key] for r in self.completed if r.results.get(key) is not None]
        return statistics.fmean(values) if values else None


def find_runs(folders: list[Path]) -> list[Run]:
    """Every run below `folders`, in path order."""
    files = sorted({f for folder in folders for f in folder.rglob(RESULTS_FILE)})
    return [Run(f.parent, json.loads(f.read_text())) for f in files]


def group(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, ...], Row] = {}
    for run in runs:
        row = rows.setdefault(run.configuration, Row(run.configuration))
        (row.completed if run.results.get("status") == "completed" else row.unfinished).append(run)
    return list(rows.values())


def varied(rows: list[Row]) -> dict[tuple[str, ...], str]:
    """What tells the rows apart: the overrides not shared by all of them."""
    shared = set.intersection(*(set(r.configuration) for r in rows)) if rows else set()
    return {r.configuration: " ".join(o for o in r.configuration if o not in shared) or "(all)"
            for r in rows}  # fmt: skip


def _cell(pair: tuple[float, float] | None, scale: float = 1.0) -> str:
    if pair is None:
        return "—"
    mean, spread = pair
    return f"{mean * scale:.4g}" + ("" if math.isnan(spread) else f" ± {spread * scale:.2g}")


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report, one line per configuration (and per failed run)."""
    names = varied(rows)
    header = ["configuration", "status", "seeds", *(m.removeprefix("test/") for m in METRICS),
              "study acc", "Δ acc (pts)", "study f1", "epochs", "params", "train s"]  # fmt: skip
    lines = []
    for row in rows:
        if row.completed:
            reference = study_figures(list(row.configuration)) or {}
            accuracy = row.mean_std("test/acc")
            study = reference.get("test/acc")
            delta = f"{(accuracy[0] - study) * 100:+.2f}" if accuracy and study else "—"
            params = row.mean_of("params_total")
            seconds = row.mean_of("train_time_s")
            lines.append([
                names[row.configuration], "completed", str(len(row.completed)),
                *(_cell(row.mean_std(m)) for m in METRICS),
                f"{study:.4f}" if study else "—", delta,
                f"{reference['test/f1']:.4f}" if "test/f1" in reference else "—",
                f"{row.mean_of('epochs') or 0:.0f}", f"{params:,.0f}" if params else "—",
                f"{seconds:.1f}" if seconds is not None else "—",
            ])  # fmt: skip
        for run in row.unfinished:
            error = str(run.results.get("error", "")).replace("|", "/")[:120]
            status = run.results.get("status", "unknown")
            lines.append([names[row.configuration], f"{status}: {error}", "1",
                          *(["—"] * (len(header) - 3))])  # fmt: skip
    return header, lines


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(rows + ["| " + " | ".join(cells) + " |" for cells in lines])


def val_curves(rows: list[Row]) -> Figure:
    """Validation accuracy and loss per epoch of every completed configuration."""
    names = varied(rows)
    curves = {
        names[row.configuration]: {
            tag: [r.val_curve(tag) for r in row.completed] for tag in ("val/acc", "val/loss")
        }
        for row in rows
        if row.completed
    }
    return val_curves_figure(curves)


def write_report(folders: list[Path], out: Path) -> list[Path]:
    runs = find_runs(folders)
    if not runs:
        raise SystemExit(f"no {RESULTS_FILE} below {', '.join(map(str, folders))}")
    rows = group(runs)
    header, lines = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    sources = ", ".join(str(f) for f in folders)
    text = f"# cnn_study report\n\n{len(runs)} runs from {sources}\n\n"
    note = (
        "\n\nStudy figures are single runs under the studies' own protocol (Study A: 10 "
        "epochs); compare runs of another length with care."
    )
    (out / "report.md").write_text(text + markdown_table(header, lines) + note + "\n")
    with (out / "report.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *lines])
    val_curves(rows).savefig(out / "val_curves.png", dpi=110)
    return [out / "report.md", out / "report.csv", out / "val_curves.png"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    args = parser.parse_args(argv)
    for path in write_report(args.folders, args.out or args.folders[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
