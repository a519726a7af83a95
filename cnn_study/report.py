"""Evidence from the runs themselves: `python -m cnn_study.report <run or sweep dir>...`.

Reads every `results.json` below the given folders (and the TensorBoard logs beside them,
with TensorBoard's own reader), groups runs that differ only in `seed`, and writes into the
first folder (or `--out`):
- `report.md`: where and when the runs ran; per configuration mean ± std and a 95 %
  Student-t interval over seeds, failed runs with their error, the studies' figures beside
  ours; each study part against its baseline paired by seed; the studies' claims judged
  supported / contradicted / not resolved / not run (`cnn_study.evidence`);
- `report.csv` (the configurations) and `report.json` (everything, for notebooks);
- `val_curves.png` and one `part_<A2…B>.png` per study part: our accuracy with its interval
  beside the study's figure, and validation curves with their spread over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cnn_study import evidence
from cnn_study.evidence import Estimate, PartRuns, estimate
from cnn_study.figures import part_figure, val_curves_figure
from cnn_study.provenance import describe, environment
from cnn_study.published import published_results
from cnn_study.rundir import RESULTS_FILE, Run, find_runs

METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/auroc")


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

    def estimate(self, metric: str) -> Estimate | None:
        """Mean, std and 95 % interval over the completed seeds."""
        return estimate(
            [r.results[metric] for r in self.completed if r.results.get(metric) is not None]
        )

    def mean_of(self, key: str) -> float | None:
        values = [r.results[key] for r in self.completed if r.results.get(key) is not None]
        return statistics.fmean(values) if values else None


def group(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, ...], Row] = {}
    for run in runs:
        row = rows.setdefault(run.configuration, Row(run.configuration))
        (row.completed if run.completed else row.unfinished).append(run)
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
              "acc 95% CI", "study acc", "Δ acc (pts)", "study f1", "epochs", "params",
              "train s"]  # fmt: skip
    lines = []
    for row in rows:
        if row.completed:
            reference = published_results(list(row.configuration)) or {}
            accuracy = row.mean_std("test/acc")
            study = reference.get("test/acc")
            delta = f"{(accuracy[0] - study) * 100:+.2f}" if accuracy and study else "—"
            params = row.mean_of("params_total")
            seconds = row.mean_of("train_time_s")
            interval = row.estimate("test/acc")
            lines.append([
                names[row.configuration], "completed", str(len(row.completed)),
                *(_cell(row.mean_std(m)) for m in METRICS),
                _interval(interval),
                f"{study:.4f}" if study else "—", delta,
                f"{reference['test/f1']:.4f}" if "test/f1" in reference else "—",
                f"{row.mean_of('epochs') or 0:.0f}", f"{params:,.0f}" if params else "—",
                f"{seconds:.1f}" if seconds is not None else "—",
            ])  # fmt: skip
        for run in row.unfinished:
            error = str(run.results.get("error", "")).replace("|", "/")[:120]
            status = unfinished_status(run)
            if error and not status.startswith("not run"):  # "not run" says why already
                status += f": {error}"
            lines.append([names[row.configuration], status, "1",
                          *(["—"] * (len(header) - 3))])  # fmt: skip
    return header, lines


def best_by_objective(rows: list[Row]) -> dict[str, Any] | None:
    """The configuration whose completed runs have the best mean objective (the metric and
    direction the runs were configured with); None when they disagree on it or none has it."""
    objectives = {run.objective for row in rows for run in row.completed}
    if len(objectives) != 1:
        return None
    ((metric, direction),) = objectives
    means = ((row, row.mean_of(metric)) for row in rows)
    scored = [(row, value) for row, value in means if value is not None]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    row, value = pick(scored, key=lambda pair: pair[1])
    return {"metric": metric, "direction": direction, "configuration": list(row.configuration),
            "value": value, "seeds": len(row.completed)}  # fmt: skip


def _best_markdown(best: dict[str, Any] | None) -> str:
    if best is None:
        return (
            "No configuration ranked: the runs were optimised for different objectives, or "
            "none recorded its objective's metric."
        )
    return (
        f"Best by the runs' objective ({best['metric']}, {best['direction']}): "
        f"`{' '.join(best['configuration']) or '(defaults)'}` with {best['value']:.4f} "
        f"(mean of {best['seeds']} seed{'s' if best['seeds'] != 1 else ''})."
    )


def _interval(value: Estimate | None) -> str:
    if value is None:
        return "—"
    if value.low is None or value.high is None:
        return "one seed"
    return f"[{value.low:.4f}, {value.high:.4f}]"


def unfinished_status(run: Run) -> str:
    """The run's status; a study part that failed for want of what it needs (A5 offline:
    ImageNet weights) is "not run (needs …)", not a failure of the package."""
    status = run.status
    error = str(run.results.get("error", "")).lower()
    for part in evidence.PARTS:
        if part.needs and part.matches(run.overrides) and "weights" in error:
            return f"not run (needs {part.needs})"
    return status


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(rows + ["| " + " | ".join(cells) + " |" for cells in lines])


def val_curves(rows: list[Row]) -> Figure:
    """Validation accuracy and loss per epoch of every completed configuration."""
    names = varied(rows)
    curves = {
        names[row.configuration]: {
            tag: [r.curve(tag) for r in row.completed] for tag in ("val/acc", "val/loss")
        }
        for row in rows
        if row.completed
    }
    return val_curves_figure(curves)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def provenance(runs: list[Run], command: str | None) -> dict[str, Any]:
    """Where, when and with what the runs ran: machines and software they recorded (this
    machine's, when they recorded none), first start, last end, wall and training time."""
    recorded = {describe(r.results["environment"]) for r in runs if r.results.get("environment")}
    starts = [(r.path / "config.yaml").stat().st_mtime for r in runs
              if (r.path / "config.yaml").is_file()]  # fmt: skip
    ends = [(r.path / RESULTS_FILE).stat().st_mtime for r in runs]
    training = sum(r.results.get("train_time_s") or 0.0 for r in runs)
    facts: dict[str, Any] = {
        "command": command,
        "machines": sorted(recorded)
        or [f"{describe(environment())} (where this report ran; the runs recorded none)"],
        "first_start": _when(min(starts)) if starts else None,
        "last_end": _when(max(ends)) if ends else None,
        "wall_hours": round((max(ends) - min(starts)) / 3600, 2) if starts and ends else None,
        "training_hours": round(training / 3600, 2),
    }
    return facts


def _provenance_markdown(facts: dict[str, Any], regenerate: str) -> str:
    lines = [f"- Runs made by: `{facts['command']}`" if facts["command"] else None,
             f"- This report: `{regenerate}`",
             *(f"- Machine and software: {m}" for m in facts["machines"]),
             f"- Runs from {facts['first_start']} to {facts['last_end']}: "
             f"{facts['wall_hours']} h wall, {facts['training_hours']} h of training"]  # fmt: skip
    return "\n".join(line for line in lines if line)


def part_tables(parts: dict[str, PartRuns]) -> tuple[str, list[evidence.ClaimResult]]:
    """Markdown of the paired differences and the claims, and the judged claims."""
    rows = ["| part | baseline | paired seeds | Δ test acc, points [95% CI] |", "|---|---|---|---|"]
    for d in evidence.baseline_differences(parts):
        shown = d.estimate.text() if d.estimate else "no seed in common"
        rows.append(f"| {d.part} | {d.baseline} | {','.join(map(str, d.seeds)) or '—'} | {shown} |")
    claims = evidence.judge_all(parts)
    lines = ["| claim | study | verdict | evidence (ours − other, points) |", "|---|---|---|---|"]
    lines += [f"| {c.claim.text} | {c.claim.study} | **{c.verdict}** | {c.evidence()} |"
              for c in claims]  # fmt: skip
    return "\n".join(rows) + "\n\n## Claims of the studies\n\n" + "\n".join(lines), claims


def part_figures(parts: dict[str, PartRuns], runs: list[Run]) -> dict[str, Figure]:
    """One picture per study part that has runs (see `evidence.FAMILIES`)."""
    figures = {}
    for family, names in evidence.FAMILIES.items():
        present = [name for name in names if name in parts and parts[name].by_seed]
        if not any(evidence.PARTS_BY_NAME[name].baseline or family == "B" for name in present):
            continue
        points, curves = [], {}
        for name in names:
            entry = parts.get(name)
            ours = entry.estimate if entry else None
            part = evidence.PARTS_BY_NAME[name]
            study = published_results([f"experiment={part.experiment}", *part.selector]) or {}
            points.append((
                name,
                ours.mean * 100 if ours else None,
                ours.low * 100 if ours and ours.low is not None else None,
                ours.high * 100 if ours and ours.high is not None else None,
                study["test/acc"] * 100 if "test/acc" in study else None,
            ))  # fmt: skip
            curves[name] = [
                r.curve("val/acc") for r in runs if r.completed and part.matches(r.overrides)
            ]
        figures[family] = part_figure(f"Study {family}", points, curves)
    return figures


def write_report(folders: list[Path], out: Path, command: str | None = None) -> list[Path]:
    runs = find_runs(folders)
    if not runs:
        raise SystemExit(f"no {RESULTS_FILE} below {', '.join(map(str, folders))}")
    rows = group(runs)
    header, lines = table(rows)
    best = best_by_objective(rows)
    parts = evidence.collect((run.overrides, run.results) for run in runs)
    comparisons, claims = part_tables(parts)
    out.mkdir(parents=True, exist_ok=True)
    facts = provenance(runs, command)
    regenerate = f"python -m cnn_study.report {' '.join(map(str, folders))} --out {out}"
    pictures = []
    for family, figure in part_figures(parts, runs).items():
        pictures.append(out / f"part_{family}.png")
        figure.savefig(pictures[-1], dpi=100)
    text = "\n\n".join([
        "# cnn_study report",
        f"{len(runs)} runs from {', '.join(str(f) for f in folders)}",
        _provenance_markdown(facts, regenerate),
        "## Configurations\n\nTest metrics: mean ± std over seeds; the interval is a 95 % "
        "Student-t confidence interval of the mean test accuracy.",
        markdown_table(header, lines),
        _best_markdown(best),
        "## Each part against its baseline, paired by seed\n\nThe difference is taken seed by "
        "seed (same initialisation and data order), then averaged; a single pair gets no "
        "interval. A claim is **supported** when every interval it rests on lies on the "
        "claimed side of zero, **contradicted** when one lies on the other side, **not "
        "resolved** when an interval includes zero or only one seed is paired, **not run** "
        "when a part has no completed run.",
        comparisons,
        "## Pictures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pictures)
        + "\n![validation curves](val_curves.png)",
        "Study figures are single runs under the studies' own protocol (Study A: 10 epochs); "
        "compare runs of another length with care.",
    ])  # fmt: skip
    (out / "report.md").write_text(text + "\n")
    with (out / "report.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *lines])
    summary = {
        "provenance": facts,
        "configurations": [dict(zip(header, cells)) for cells in lines],
        "best_by_objective": best,
        "parts": {
            name: {
                "seeds": entry.by_seed,
                "estimate": asdict(entry.estimate) if entry.estimate else None,
                "unfinished": entry.unfinished,
            }
            for name, entry in parts.items()
        },
        "differences": [asdict(d) for d in evidence.baseline_differences(parts)],
        "claims": [c.as_dict() for c in claims],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    val_curves(rows).savefig(out / "val_curves.png", dpi=110)
    return [out / "report.md", out / "report.csv", out / "report.json", out / "val_curves.png",
            *pictures]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument("--command", help="the command that made the runs, for the header")
    args = parser.parse_args(argv)
    for path in write_report(args.folders, args.out or args.folders[0], args.command):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
