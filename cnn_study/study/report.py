"""Evidence from the runs themselves: `python -m cnn_study.study.report <folder>...`.

Reads every `results.json` below the given folders (and the TensorBoard logs beside them,
with TensorBoard's own reader) and writes into the first folder (or `--out`):
- `report.md`: where, when and with what the runs ran; per configuration (runs that differ
  only in `seed`) mean ± std and a 95 % Student-t interval over seeds, failed runs with
  their error; the run's best configuration by its objective;
- for a study folder (one holding `study.yaml`, written by `python -m cnn_study.study`):
  each part with its distinct seeds, interval and the study's own figure; each part
  against its baseline paired by seed; the claims judged (`cnn_study.study.evidence`)
  with the per-image view (churn, exact McNemar) of one seed pair; the runs that belong to
  no part, listed apart and never pooled;
- `report.csv` and `report.json` (everything, for notebooks);
- pictures: `val_curves.png` for a plain folder; for a study one `family_<name>.png` per
  part family: accuracy with its interval beside the study's figure, and validation curves
  (mean over seeds, band min–max).
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

from cnn_study.errors import CnnStudyError
from cnn_study.figures import part_figure, val_curves_figure
from cnn_study.provenance import describe, environment
from cnn_study.rundir import REJECTED, RESULTS_FILE, Run, find_runs, read_json
from cnn_study.study import evidence
from cnn_study.study.definition import STUDY_FILE, Study, read_study
from cnn_study.study.evidence import Estimate, PartRuns, estimate
from cnn_study.study.membership import assign, recorded_configs
from cnn_study.study.predictions import compare, load_correct

METRICS = ("test/acc", "test/precision", "test/recall", "test/f1", "test/auroc")
LOOKS_FILE = "looks.json"  # the looks of study.until_resolved, written by the sweeper


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
        """Mean, std and 95 % interval over the completed seeds, within the metric's range."""
        return estimate(
            [r.results[metric] for r in self.completed if r.results.get(metric) is not None],
            bounds=evidence.metric_bounds(metric),
        )

    @property
    def distinct_seeds(self) -> int:
        return len({r.results.get("seed") for r in self.completed})

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
              "acc 95% CI", "epochs", "params", "train s"]  # fmt: skip
    lines = []
    for row in rows:
        if row.completed:
            params = row.mean_of("params_total")
            seconds = row.mean_of("train_time_s")
            lines.append([
                names[row.configuration], "completed", str(row.distinct_seeds),
                *(_cell(row.mean_std(m)) for m in METRICS),
                _interval(row.estimate("test/acc")),
                f"{row.mean_of('epochs') or 0:.0f}", f"{params:,.0f}" if params else "—",
                f"{seconds:.1f}" if seconds is not None else "—",
            ])  # fmt: skip
        for run in row.unfinished:
            error = str(run.results.get("error", "")).replace("|", "/")[:120]
            status = run.status + (f": {error}" if error else "")
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
    return {
        "command": command,
        "machines": sorted(recorded)
        or [f"{describe(environment())} (where this report ran; the runs recorded none)"],
        "first_start": _when(min(starts)) if starts else None,
        "last_end": _when(max(ends)) if ends else None,
        "wall_hours": round((max(ends) - min(starts)) / 3600, 2) if starts and ends else None,
        "training_hours": round(training / 3600, 2),
    }


def _provenance_markdown(facts: dict[str, Any], regenerate: str) -> str:
    lines = [f"- Runs made by: `{facts['command']}`" if facts["command"] else None,
             f"- This report: `{regenerate}`",
             *(f"- Machine and software: {m}" for m in facts["machines"]),
             f"- Runs from {facts['first_start']} to {facts['last_end']}: "
             f"{facts['wall_hours']} h wall, {facts['training_hours']} h of training"]  # fmt: skip
    return "\n".join(line for line in lines if line)


@dataclass
class StudyEvidence:
    """A study folder's runs sorted into parts, judged at the confidence its looks allow."""

    study: Study
    parts: dict[str, PartRuns]
    others: list[Run]
    confidence: float
    looks: list[dict[str, Any]]

    @property
    def claims(self) -> list[evidence.ClaimResult]:
        return evidence.judge_all(self.study, self.parts, self.confidence)

    @property
    def differences(self) -> list[evidence.Difference]:
        return evidence.baseline_differences(self.study, self.parts, self.confidence)


def study_evidence(folder: Path, runs: list[Run]) -> StudyEvidence:
    """Read the folder's study.yaml and sort `runs` into its parts (exact membership)."""
    study = read_study(folder / STUDY_FILE)
    members, others = assign(study, recorded_configs(folder, study), runs)
    looks = read_json(folder / LOOKS_FILE).get("looks", [])
    settings = study.run
    confidence = (
        evidence.look_confidence(settings.max_looks, settings.alpha)
        if settings.until_resolved
        else evidence.CONFIDENCE
    )
    return StudyEvidence(study, evidence.collect(study, members), others, confidence, looks)


def _pct(value: float | None) -> str:
    return f"{value * 100:.2f}" if value is not None else "—"


def parts_table(found: StudyEvidence) -> tuple[list[str], list[list[str]]]:
    """One line per part: status, distinct seeds, test accuracy and the study's figure."""
    header = ["part", "status", "seeds", "test acc % [95% CI]", "study acc %", "Δ acc (pts)",
              "f1", "study f1", "epochs", "train s"]  # fmt: skip
    lines = []
    for part in found.study.parts:
        entry = found.parts[part.name]
        accuracy = entry.estimate("test/acc")
        f1 = entry.estimate("test/f1")
        study_acc = part.published.get("test/acc")
        delta = (accuracy.mean - study_acc) * 100 if accuracy and study_acc is not None else None
        epochs = [r.results.get("epochs") for r in entry.completed if r.results.get("epochs")]
        seconds = [r.results.get("train_time_s") or 0.0 for r in entry.completed]
        status = entry.status.replace("|", "/")
        lines.append([
            part.name, status[:160], ",".join(map(str, entry.seeds)) or "—",
            accuracy.text() if accuracy else "—", _pct(study_acc),
            f"{delta:+.2f}" if delta is not None else "—",
            f"{f1.mean:.4f}" if f1 else "—",
            f"{part.published['test/f1']:.4f}" if "test/f1" in part.published else "—",
            f"{statistics.fmean(epochs):.0f}" if epochs else "—",
            f"{statistics.fmean(seconds):.1f}" if seconds else "—",
        ])  # fmt: skip
    return header, lines


def image_view(found: StudyEvidence, better: str, worse: str) -> str:
    """Churn and exact McNemar of the two parts' runs at their lowest common seed."""
    a = {int(r.results.get("seed", 0)): r for r in found.parts[better].completed}
    b = {int(r.results.get("seed", 0)): r for r in found.parts[worse].completed}
    for seed in sorted(set(a) & set(b)):
        first, second = load_correct(a[seed].path), load_correct(b[seed].path)
        if first is None or second is None:
            continue
        try:
            comparison = compare(first, second)
        except ValueError as error:
            return f"{better} vs {worse}: {error}"
        text = comparison.text().replace("only a right", f"only {better} right")
        return f"{better} vs {worse}, seed {seed}: " + text.replace("only b", f"only {worse}")
    return f"{better} vs {worse}: no seed pair with saved test predictions"


def looks_text(found: StudyEvidence) -> str:
    settings = found.study.run
    if not settings.until_resolved:
        return (
            "Each claim is judged once, from the seeds run, with 95 % intervals of the "
            "differences paired by seed."
        )
    done = len(found.looks) or 1
    return (
        f"Seeds were added until the claims resolved (`study.until_resolved`, at most "
        f"{settings.max_seeds} seeds a part): verdicts after {done} of "
        f"{settings.max_looks} planned looks, each interval at "
        f"{found.confidence * 100:.2f} % confidence — α = {settings.alpha:g} split evenly "
        f"over the {settings.max_looks} planned looks (Bonferroni), so the chance of any "
        "false verdict over all looks stays at most α."
    )


def claims_table(found: StudyEvidence) -> tuple[str, list[evidence.ClaimResult]]:
    claims = found.claims
    limit = found.study.run.max_seeds
    lines = ["| claim | study | verdict | evidence (paired by seed, points) | per test image |",
             "|---|---|---|---|---|"]  # fmt: skip
    for result in claims:
        verdict = result.verdict
        if verdict == "not resolved" and found.study.run.until_resolved:
            seeds = min((len(d.seeds) for d in result.differences), default=0)
            verdict += f" after {seeds} seeds" + (" (the budget)" if seeds >= limit else "")
        per_image = (
            "; ".join(
                image_view(found, d.part, d.baseline)
                for d in result.differences
                if not d.within_part
            )
            or "—"
        )
        lines.append(
            f"| {result.claim.text} | {result.published or '—'} | **{verdict}** | "
            f"{result.evidence()} | {per_image} |"
        )
    return "\n".join(lines), claims


def differences_table(found: StudyEvidence) -> str:
    rows = ["| part | baseline | paired seeds | Δ test acc, points [CI] |", "|---|---|---|---|"]
    for d in found.differences:
        shown = d.estimate.text() if d.estimate else "no seed in common"
        rows.append(f"| {d.part} | {d.baseline} | {','.join(map(str, d.seeds)) or '—'} | {shown} |")
    return "\n".join(rows)


def family_figures(found: StudyEvidence) -> dict[str, Figure]:
    """One picture per part family (its parts and their baselines) with runs."""
    families: dict[str, list[str]] = {}
    for part in found.study.parts:
        names = families.setdefault(part.family_name, [])
        for name in (part.baseline, part.name):
            if name and name not in names:
                names.append(name)
    figures = {}
    for family, names in families.items():
        if len(names) < 2 or not any(found.parts[n].completed for n in names):
            continue
        points, curves = [], {}
        for name in names:
            entry = found.parts[name]
            ours = entry.estimate("test/acc")
            study = entry.part.published.get("test/acc")
            points.append((
                name,
                ours.mean * 100 if ours else None,
                ours.low * 100 if ours and ours.low is not None else None,
                ours.high * 100 if ours and ours.high is not None else None,
                study * 100 if study is not None else None,
            ))  # fmt: skip
            curves[name] = [r.curve("val/acc") for r in entry.completed]
        figures[family] = part_figure(f"{family}", points, curves)
    return figures


def others_table(others: list[Run]) -> str:
    if not others:
        return "None: every run in the folder is a run of a part."
    lines = ["| run | overrides | status | test acc |", "|---|---|---|---|"]
    for run in others:
        accuracy = run.results.get("test/acc")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "—"
        lines.append(f"| {run.path.name} | {' '.join(run.overrides)} | {run.status} | {shown} |")
    return "\n".join(lines)


def study_sections(found: StudyEvidence, out: Path) -> tuple[list[str], list[Path], dict]:
    """The study's markdown sections, its pictures and its part of report.json."""
    study = found.study
    header, lines = parts_table(found)
    claims_md, claims = claims_table(found)
    pictures = []
    for family, figure in family_figures(found).items():
        pictures.append(out / f"family_{family}.png")
        figure.savefig(pictures[-1], dpi=100)
    deviations = study.deviations()
    scale = (
        f"Scale `{study.run.scale}`: {study.scales[study.run.scale].description}\n\n"
        "Deviations from the study's protocol (overrides of this scale):\n"
        + "\n".join(f"- {line}" for line in deviations)
        if study.run.scale
        else "Scale: the study's own protocol (no `study.scale`)."
    )
    sections = [
        f"## {study.title}",
        f"Study file: `{study.source}`; protocol: `{' '.join(study.protocol) or '(defaults)'}`"
        + (
            f"; overrides given to every job: `{' '.join(study.run.overrides)}`"
            if study.run.overrides
            else ""
        ),
        scale,
        "### Parts\n\nA run is a part's when its composed config, seed aside, equals the "
        "part's; seeds counts distinct seeds; the interval is a 95 % Student-t interval of "
        "the mean over seeds, clipped to the metric's range ([0, 1]; [−1, 1] for "
        "differences); study figures are single runs of the original study.",
        markdown_table(header, lines),
        "### Each part against its baseline, paired by seed",
        differences_table(found),
        "### Claims\n\n" + looks_text(found) + " A claim is **supported** when every "
        "interval lies on the claimed side of its margin (zero unless the claim names one), "
        "**contradicted** when one lies on the other side, **not resolved** when an interval "
        "includes the margin or fewer than two seeds are paired, **not run** when a part has "
        "no completed run. Per test image: the share "
        "of test images whose correctness flips between the two parts (churn) and the exact "
        "McNemar test of one seed pair — it speaks for those two networks, not for the recipe.",
        claims_md,
        "### Runs of no part (listed apart, never pooled)",
        others_table(found.others),
        "### Pictures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pictures),
    ]
    summary = {
        "study": {"title": study.title, "source": study.source, "scale": study.run.scale,
                  "deviations": deviations, "confidence": found.confidence,
                  "looks": found.looks},
        "parts": {
            name: {
                "status": entry.status,
                "seeds": entry.seeds,
                "test/acc": entry.by_seed("test/acc"),
                "estimate": asdict(e) if (e := entry.estimate("test/acc")) else None,
                "published": entry.part.published,
            }
            for name, entry in found.parts.items()
        },
        "differences": [asdict(d) for d in found.differences],
        "claims": [c.as_dict() for c in claims],
        "other_runs": [str(r.path) for r in found.others],
    }  # fmt: skip
    return sections, pictures, summary


def rejected_markdown(rejected: list[Run]) -> str:
    """Runs whose config or data was refused before any checkpoint: never configurations."""
    lines = ["## Rejected before training", "", "| run | overrides | error |", "|---|---|---|"]
    for run in rejected:
        error = str(run.results.get("error", "")).replace("|", "/")[:200]
        lines.append(f"| {run.path} | {' '.join(run.overrides)} | {error} |")
    return "\n".join(lines)


def write_report(folders: list[Path], out: Path, command: str | None = None) -> list[Path]:
    runs = find_runs(folders)
    if not runs:
        raise CnnStudyError(f"no {RESULTS_FILE} below {', '.join(map(str, folders))}")
    rejected = [run for run in runs if run.status == REJECTED]
    rows = group([run for run in runs if run.status != REJECTED])
    header, lines = table(rows)
    best = best_by_objective(rows)
    out.mkdir(parents=True, exist_ok=True)
    facts = provenance(runs, command)
    regenerate = f"python -m cnn_study.study.report {' '.join(map(str, folders))} --out {out}"
    sections = [
        "# cnn_study report",
        f"{len(runs)} runs from {', '.join(str(f) for f in folders)}",
        _provenance_markdown(facts, regenerate),
    ]
    summary: dict[str, Any] = {"provenance": facts}
    pictures: list[Path] = []
    if (folders[0] / STUDY_FILE).is_file():
        found = study_evidence(folders[0], runs)
        study_md, pictures, study_json = study_sections(found, out)
        sections += study_md
        summary |= study_json
    elif rows:
        val_curves(rows).savefig(out / "val_curves.png", dpi=110)
        pictures = [out / "val_curves.png"]
        sections.append("![validation curves](val_curves.png)")
    sections += [
        "## Every configuration\n\nTest metrics: mean ± std over seeds; the interval is a "
        "95 % Student-t confidence interval of the mean test accuracy.",
        markdown_table(header, lines),
        _best_markdown(best),
        *([rejected_markdown(rejected)] if rejected else []),
    ]
    (out / "report.md").write_text("\n\n".join(sections) + "\n")
    with (out / "report.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *lines])
    summary |= {
        "configurations": [dict(zip(header, cells)) for cells in lines],
        "best_by_objective": best,
        "rejected": [str(run.path) for run in rejected],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [out / "report.md", out / "report.csv", out / "report.json", *pictures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.study.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run, sweep or study folders")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument("--command", help="the command that made the runs, for the header")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.folders, args.out or args.folders[0], args.command)
    except CnnStudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
