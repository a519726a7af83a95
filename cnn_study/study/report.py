"""Evidence from the runs themselves: `python -m cnn_study.study.report <folder>...`, or
`python -m cnn_study.study.report --runs runs.csv --study study.yaml` (no run folders).

Reads every `results.json` below the given folders (and the TensorBoard logs beside them,
with TensorBoard's own reader) and writes into the first folder (or `--out`):
- `report.md`: where, when and with what the runs ran; per configuration (runs that differ
  only in `seed`) mean ± std over seeds and a 95 % Student-t interval of the mean over
  distinct seeds, failed runs with their error; the best configuration by the runs'
  objective among those with the most seeds;
- for a study folder (one holding `study.yaml`, written by `python -m cnn_study.study`):
  each part with its distinct seeds, interval and the study's own figure; each part
  against its baseline paired by seed; the claims judged at the study's last completed
  look under its error control (`cnn_study.study.evidence`), with the per-image view
  (churn, one-sided exact McNemar) of one seed pair, descriptive; the runs that belong to
  no part, listed apart and never pooled; `runs.csv`, one row per run, from which
  `--runs` judges the study again anywhere;
- `report.csv` and `report.json` (everything, for notebooks);
- pictures: `val_curves.png` for a plain folder; for a study one `family_<name>.png` per
  part family: accuracy with its interval beside the study's figure, and validation curves
  (mean over seeds, band min–max).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cnn_study.errors import CnnStudyError
from cnn_study.figures import part_figure, val_curves_figure
from cnn_study.metrics import recorded_metrics, report_columns
from cnn_study.provenance import describe, environment
from cnn_study.rundir import (
    REJECTED,
    RESULTS_FILE,
    Run,
    find_runs,
    load_correct,
    write_text_atomic,
)
from cnn_study.study import evidence
from cnn_study.study.definition import STUDY_FILE, PartSpec, Study, read_study
from cnn_study.study.evidence import Estimate, PartRuns, estimate
from cnn_study.study.looks import control_of, read_looks
from cnn_study.study.membership import assign, recorded_configs
from cnn_study.study.predictions import compare

METRICS = tuple(report_columns())


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

    def by_seed(self, metric: str) -> dict[int, float]:
        """The metric per distinct seed (repeats of one seed averaged first)."""
        return PartRuns(PartSpec(), self.completed).by_seed(metric)

    def estimate(self, metric: str) -> Estimate | None:
        """Mean, std and 95 % interval over the distinct seeds, within the metric's range."""
        values = list(self.by_seed(metric).values())
        return estimate(values, bounds=evidence.metric_bounds(metric))

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


def best_of(
    candidates: list[tuple[str, list[Run]]], objectives: set[tuple[str, str]]
) -> dict[str, Any] | None:
    """The candidate (a configuration's or a part's runs) with the best mean objective over
    its distinct seeds, among those with the most seeds: a one-seed duplicate of a
    configuration never beats the mean of several. None when the runs were optimised for
    different objectives or none recorded its objective's metric."""
    if len(objectives) != 1:
        return None
    ((metric, direction),) = objectives
    scored = []
    for name, runs in candidates:
        values = PartRuns(PartSpec(), runs).by_seed(metric)
        if values:
            scored.append((name, statistics.fmean(values.values()), len(values)))
    if not scored:
        return None
    most = max(seeds for *_, seeds in scored)
    pick = max if direction == "maximize" else min
    name, value, seeds = pick((s for s in scored if s[2] == most), key=lambda s: s[1])
    return {"metric": metric, "direction": direction, "configuration": name,
            "value": value, "seeds": seeds}  # fmt: skip


def best_by_objective(rows: list[Row]) -> dict[str, Any] | None:
    """The best configuration of a folder (see `best_of`)."""
    objectives = {run.objective for row in rows for run in row.completed}
    candidates = [(" ".join(row.configuration) or "(defaults)", row.completed) for row in rows]
    return best_of(candidates, objectives)


def _best_markdown(best: dict[str, Any] | None) -> str:
    if best is None:
        return (
            "No configuration ranked: the runs were optimised for different objectives, or "
            "none recorded its objective's metric."
        )
    return (
        f"Best by the runs' objective ({best['metric']}, {best['direction']}; mean over "
        f"seeds, among those with the most seeds): `{best['configuration']}` with "
        f"{best['value']:.4f} (mean of {best['seeds']} seed{'s' if best['seeds'] != 1 else ''})."
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
    ends = [(r.path / RESULTS_FILE).stat().st_mtime for r in runs
            if (r.path / RESULTS_FILE).is_file()]  # fmt: skip
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
    span = (f"- Runs from {facts['first_start']} to {facts['last_end']}: "
            f"{facts['wall_hours']} h wall, " if facts.get("first_start") else "- ")  # fmt: skip
    lines = [f"- Runs made by: `{facts['command']}`" if facts["command"] else None,
             f"- This report: `{regenerate}`",
             *(f"- Machine and software: {m}" for m in facts["machines"]),
             f"{span}{facts['training_hours']} h of training"]  # fmt: skip
    return "\n".join(line for line in lines if line)


@dataclass
class StudyEvidence:
    """A study's runs sorted into parts and judged at its last completed look (the runs of
    a round still open are `pending`: counted at the next look)."""

    study: Study
    parts: dict[str, PartRuns]
    others: list[Run]
    looks: list[dict[str, Any]]
    pending: list[tuple[str, Run]] = field(default_factory=list)

    @property
    def control(self) -> evidence.ErrorControl:
        return control_of(self.study)

    @cached_property
    def claims(self) -> list[evidence.ClaimResult]:
        return evidence.judge_all(self.study, self.parts, self.control)

    @property
    def differences(self) -> list[evidence.Difference]:
        return evidence.baseline_differences(self.study, self.parts)

    @property
    def runs(self) -> list[tuple[str, Run]]:
        """Every run with its part ('' for the runs of no part)."""
        judged = [(name, run) for name, entry in self.parts.items() for run in entry.runs]
        return judged + self.pending + [("", run) for run in self.others]


def judged_at_look(
    study: Study, members: dict[str, list[Run]], others: list[Run], looks: list[dict[str, Any]]
) -> StudyEvidence:
    """The parts as the last look saw them: completed runs of the seeds it counted (runs
    that did not complete stay, for their status); before any look, every run."""
    if not looks:
        return StudyEvidence(study, evidence.collect(study, members), others, looks)
    counted = looks[-1]["seeds"]
    kept: dict[str, list[Run]] = {}
    pending: list[tuple[str, Run]] = []
    for name, runs in members.items():
        seeds = set(counted.get(name, []))
        for run in runs:
            later = run.completed and int(run.results.get("seed", 0)) not in seeds
            if later:
                pending.append((name, run))
            else:
                kept.setdefault(name, []).append(run)
    return StudyEvidence(study, evidence.collect(study, kept), others, looks, pending)


def study_evidence(folder: Path, runs: list[Run]) -> StudyEvidence:
    """Read the folder's study.yaml and looks, sort `runs` into its parts (exact
    membership)."""
    study = read_study(folder / STUDY_FILE)
    members, others = assign(study, recorded_configs(folder, study), runs)
    return judged_at_look(study, members, others, read_looks(folder))


def _pct(value: float | None) -> str:
    return f"{value * 100:.2f}" if value is not None else "—"


def parts_table(found: StudyEvidence) -> tuple[list[str], list[list[str]]]:
    """One line per part: status, distinct seeds, test accuracy and the study's figure."""
    header = ["part", "status", "seeds", "test acc % [95 % CI]", "study acc %", "Δ acc (pts)",
              "f1", "study f1", "ece", "epochs", "train s"]  # fmt: skip
    lines = []
    for part in found.study.parts:
        entry = found.parts[part.name]
        accuracy = entry.estimate("test/acc")
        f1 = entry.estimate("test/f1")
        ece = entry.estimate("test/ece")
        study_acc = part.published.get("test/acc")
        delta = (accuracy.mean - study_acc) * 100 if accuracy and study_acc is not None else None
        epochs = [r.results.get("epochs") for r in entry.completed if r.results.get("epochs")]
        seconds = [r.results["train_time_s"] for r in entry.completed
                   if r.results.get("train_time_s") is not None]  # fmt: skip
        status = entry.status.replace("|", "/")
        lines.append([
            part.name, status[:160], ",".join(map(str, entry.seeds)) or "—",
            accuracy.text() if accuracy else "—", _pct(study_acc),
            f"{delta:+.2f}" if delta is not None else "—",
            f"{f1.mean:.4f}" if f1 else "—",
            f"{part.published['test/f1']:.4f}" if "test/f1" in part.published else "—",
            f"{ece.mean:.4f}" if ece else "—",
            f"{statistics.fmean(epochs):.0f}" if epochs else "—",
            f"{statistics.fmean(seconds):.1f}" if seconds else "—",
        ])  # fmt: skip
    return header, lines


def image_view(found: StudyEvidence, better: str, worse: str) -> str | None:
    """Churn and one-sided exact McNemar of the two parts' runs at their lowest common
    seed: which way the images point (descriptive, not part of the verdict); None when no
    seed pair saved its test predictions."""
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
        return f"seed {seed}: " + comparison.text(better, worse)
    return None


def looks_text(found: StudyEvidence) -> str:
    """Which look the verdicts are, and the error control they were judged under."""
    study, control = found.study, found.control
    if found.looks:
        look = found.looks[-1]
        when = (
            f"Verdicts at look {look['look']} of {control.looks} planned (a look is a "
            f"completed round of jobs; {evidence.tests_at_look(found.claims)} hypotheses)"
        )
    else:
        when = (
            "Provisional verdicts: no round has completed yet (or the folder predates "
            "recorded looks), judged from every completed run at the first look's level"
        )
    rounds = (
        f"; seeds were added to the parts of unresolved claims (`study.until_resolved`, at "
        f"most {study.run.max_seeds} seeds a part)"
        if study.run.until_resolved
        else ""
    )
    return f"{when}{rounds}. Error control: {control.text()}."


def claims_table(found: StudyEvidence) -> tuple[str, list[evidence.ClaimResult]]:
    claims = found.claims
    limit = found.study.run.max_seeds
    lines = [
        "| claim | metric | study | verdict | evidence (paired by seed, points) | per test "
        "image (descriptive, not part of the verdict) |",
        "|---|---|---|---|---|---|",
    ]
    for result in claims:
        verdict = result.verdict
        if verdict == "not resolved" and found.study.run.until_resolved:
            seeds = min((len(d.seeds) for d in result.adjacent), default=0)
            verdict += f" after {seeds} seeds" + (" (the budget)" if seeds >= limit else "")
        views = [image_view(found, d.part, d.baseline) for d in result.adjacent
                 if not d.within_part and d.metric == "test/acc"]  # fmt: skip
        shown = [view for view in views if view]
        per_image = "; ".join(shown) or ("— (no saved test predictions)" if views else "—")
        evidence_text = result.evidence().replace("|", "/")
        claim = result.claim
        metric = " vs ".join(dict.fromkeys(claim.metrics or [claim.metric]))
        lines.append(
            f"| {claim.text} | {metric}, {claim.direction_text} | {result.published or '—'} | "
            f"**{verdict}** | {evidence_text} | {per_image} |"
        )
    return "\n".join(lines), claims


def differences_table(found: StudyEvidence) -> str:
    rows = ["| part | baseline | paired seeds | Δ test acc, points [95 % CI, per comparison] "
            "| P(part better) |", "|---|---|---|---|---|"]  # fmt: skip
    for d in found.differences:
        shown = d.estimate.text() if d.estimate else "no seed in common"
        wins = d.improvement
        better = f"{wins * len(d.values):g}/{len(d.values)}" if wins is not None else "—"
        rows.append(f"| {d.part} | {d.baseline} | {','.join(map(str, d.seeds)) or '—'} | "
                    f"{shown} | {better} |")  # fmt: skip
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


def others_table(found: StudyEvidence) -> str:
    lines = []
    for name, run in found.pending:
        lines.append(f"| {run.path.name} | {name}: seed {run.results.get('seed')}, counted at "
                     f"the next look | {run.status} | {_acc(run)} |")  # fmt: skip
    for run in found.others:
        lines.append(f"| {run.path.name} | {' '.join(run.overrides)} | {run.status} | "
                     f"{_acc(run)} |")  # fmt: skip
    if not lines:
        return "None: every run in the folder is a run of a part counted at the judged look."
    return "\n".join(["| run | overrides | status | test acc |", "|---|---|---|---|", *lines])


def _acc(run: Run) -> str:
    accuracy = run.results.get("test/acc")
    return f"{accuracy:.4f}" if isinstance(accuracy, float) else "—"


def best_part(found: StudyEvidence) -> dict[str, Any] | None:
    """The best part by the runs' objective, among the parts with the most seeds."""
    entries = [(name, entry.completed) for name, entry in found.parts.items()]
    objectives = {run.objective for _, runs in entries for run in runs}
    return best_of(entries, objectives)


RECORDED = tuple(recorded_metrics())  # every metric a claim may name
RUN_COLUMNS = ("part", "seed", "status", "look", *RECORDED, "epochs", "train_time_s",
               "objective", "machine", "run", "error")  # fmt: skip


def first_looks(found: StudyEvidence) -> dict[tuple[str, int], int]:
    """(part, seed) → the first look that counted it."""
    first: dict[tuple[str, int], int] = {}
    for look in found.looks:
        for name, seeds in look["seeds"].items():
            for seed in seeds:
                first.setdefault((name, int(seed)), int(look["look"]))
    return first


def run_rows(found: StudyEvidence, folder: Path | None) -> list[dict[str, Any]]:
    """One row per run: what `--runs` needs to judge the study again."""
    first = first_looks(found)
    rows = []
    for name, run in found.runs:
        seed = int(run.results.get("seed", 0))
        metric, direction = run.objective
        environment_facts = run.results.get("environment")
        path = run.path.relative_to(folder) if folder and run.path.is_relative_to(folder) else (
            run.path)  # fmt: skip
        counted = first.get((name, seed)) if run.completed else None
        rows.append({
            **{key: run.results.get(key) for key in RUN_COLUMNS},
            "part": name, "seed": seed, "status": run.status, "look": counted,
            "objective": f"{metric} {direction}",
            "machine": describe(environment_facts) if environment_facts else run.results.get(
                "machine"),
            "run": str(path),
            "error": str(run.results.get("error") or "")[:300] or None,
        })  # fmt: skip
    return rows


def write_runs_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, RUN_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in RUN_COLUMNS})
    write_text_atomic(path, text.getvalue())
    return path


NUMERIC = {*RECORDED, "train_time_s"}


def read_runs_csv(path: Path) -> list[tuple[str, Run]]:
    """(part, run) of each row of a runs.csv; the run's results rebuilt from its cells."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise CnnStudyError(f"--runs {path}: {error.strerror or error}") from None
    if not rows or not {"part", "seed", "status", "look"} <= set(rows[0]):
        raise CnnStudyError(f"--runs {path}: not a runs.csv (columns {', '.join(RUN_COLUMNS)})")
    runs = []
    for row in rows:
        results: dict[str, Any] = {"status": row["status"], "seed": int(row["seed"])}
        for key, cell in row.items():
            if cell in ("", None) or key in ("part", "seed", "status", "run"):
                continue
            if key in NUMERIC:
                results[key] = float(cell)
            elif key in ("look", "epochs"):
                results[key] = int(cell)
            elif key == "objective":
                metric, direction = cell.split()
                results[key] = {"metric": metric, "direction": direction}
            else:
                results[key] = cell
        runs.append((row["part"], Run(Path(row["run"] or f"{row['part']}/seed{row['seed']}"),
                                      results)))  # fmt: skip
    return runs


def evidence_from_runs(runs_csv: Path, study_file: Path) -> StudyEvidence:
    """A study judged from its runs.csv: parts from the `part` column, looks from `look`
    (look L counted every completed run with look ≤ L)."""
    study = read_study(study_file)
    rows = read_runs_csv(runs_csv)
    unknown = sorted({name for name, _ in rows if name and name not in study.parts_by_name})
    if unknown:
        raise CnnStudyError(f"--runs {runs_csv}: parts not in {study_file}: {', '.join(unknown)}")
    members: dict[str, list[Run]] = {p.name: [] for p in study.parts}
    others = []
    for name, run in rows:
        (members[name] if name else others).append(run)
    count = max((run.results.get("look", 0) for _, run in rows), default=0)
    looks = [
        {"look": look, "seeds": {
            name: sorted({int(r.results["seed"]) for r in runs
                          if r.completed and 0 < r.results.get("look", 0) <= look})
            for name, runs in members.items()}}
        for look in range(1, count + 1)
    ]  # fmt: skip
    return judged_at_look(study, members, others, looks)


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
    best = best_part(found)
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
        "### Each part against its baseline, paired by seed\n\nDescriptive: each interval "
        "is a 95 % interval of that one comparison, not corrected for the others; P(part "
        "better) counts the seeds on which the part is ahead (ties count half). Verdicts "
        "are the claims' below.",
        differences_table(found),
        "### Claims\n\n" + looks_text(found) + " A claim is **supported** when the "
        'hypothesis "it is false" is rejected: every adjacent pair of its order is shown '
        "above its margin (zero unless the claim names one) by a one-sided paired t test "
        "(the exact sign test when the differences are ties), the largest of their p-values "
        'Holm-adjusted; **contradicted** when "it is true" is rejected: some pair of its '
        "order, the ends of a chain included, is shown below its margin (Bonferroni over "
        "those pairs, then Holm); **not resolved** otherwise; **not run** when a part has "
        "no completed run. The 95 % intervals shown beside them describe, they do not "
        "decide. Per test image (descriptive): the images only one of the two parts gets "
        "right at one seed, which part they favour, and the one-sided exact McNemar p of "
        "the claimed direction — it speaks for two trained networks, not for the recipe.",
        claims_md,
        "### Runs of no part, and runs counted at the next look (listed apart, never pooled)",
        others_table(found),
        "### Best part\n\n" + _best_markdown(best),
        "### Pictures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pictures),
    ]
    summary = {
        "study": {"title": study.title, "source": study.source, "scale": study.run.scale,
                  "deviations": deviations, "error_control": found.control.as_dict(),
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
        "differences": [d.as_dict() for d in found.differences],
        "claims": [c.as_dict() for c in claims],
        "best_part": best,
        "other_runs": [str(r.path) for r in found.others],
        "pending_runs": [str(r.path) for _, r in found.pending],
    }  # fmt: skip
    return sections, pictures, summary


def rejected_markdown(rejected: list[Run]) -> str:
    """Runs whose config or data was refused before any checkpoint: never configurations."""
    lines = ["## Rejected before training", "", "| run | overrides | error |", "|---|---|---|"]
    for run in rejected:
        error = str(run.results.get("error", "")).replace("|", "/")[:200]
        lines.append(f"| {run.path} | {' '.join(run.overrides)} | {error} |")
    return "\n".join(lines)


def _write(out: Path, sections: list[str], summary: dict[str, Any],
           table_rows: tuple[list[str], list[list[str]]] | None) -> list[Path]:  # fmt: skip
    write_text_atomic(out / "report.md", "\n\n".join(sections) + "\n")
    write_text_atomic(out / "report.json", json.dumps(summary, indent=2) + "\n")
    written = [out / "report.md", out / "report.json"]
    if table_rows is not None:
        text = io.StringIO()
        csv.writer(text).writerows([table_rows[0], *table_rows[1]])
        write_text_atomic(out / "report.csv", text.getvalue())
        written.insert(1, out / "report.csv")
    return written


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
    extra: list[Path] = []
    if (folders[0] / STUDY_FILE).is_file():
        found = study_evidence(folders[0], runs)
        study_md, pictures, study_json = study_sections(found, out)
        sections += study_md
        summary |= study_json
        extra.append(write_runs_csv(run_rows(found, folders[0]), out / RUNS_FILE))
    elif rows:
        val_curves(rows).savefig(out / "val_curves.png", dpi=110)
        pictures = [out / "val_curves.png"]
        sections.append("![validation curves](val_curves.png)")
    sections += [
        "## Every configuration\n\nTest metrics: mean ± std over distinct seeds (repeats "
        "of a seed averaged first); the interval is a 95 % Student-t confidence interval "
        "of the mean test accuracy over those seeds.",
        markdown_table(header, lines),
        _best_markdown(best),
        *([rejected_markdown(rejected)] if rejected else []),
    ]
    summary |= {
        "configurations": [dict(zip(header, cells)) for cells in lines],
        "best_by_objective": best,
        "rejected": [str(run.path) for run in rejected],
    }
    return [*_write(out, sections, summary, (header, lines)), *extra, *pictures]


RUNS_FILE = "runs.csv"


def write_report_from_runs(runs_csv: Path, study_file: Path, out: Path) -> list[Path]:
    """The study's report judged from a runs.csv (no run folders: no curves, no per-image
    view, no table of configurations)."""
    found = evidence_from_runs(runs_csv, study_file)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_rows(found, None)
    training = sum(float(r["train_time_s"] or 0) for r in rows)
    facts = {"command": found.study.run.command,
             "machines": sorted({r["machine"] for r in rows if r["machine"]}) or ["not recorded"],
             "training_hours": round(training / 3600, 2)}  # fmt: skip
    regenerate = (f"python -m cnn_study.study.report --runs {runs_csv} --study {study_file} "
                  f"--out {out}")  # fmt: skip
    sections = [
        "# cnn_study report",
        f"{len(rows)} runs from {runs_csv} (judged from the table of runs; the run folders' "
        "curves and test predictions are not part of it)",
        _provenance_markdown(facts, regenerate),
    ]
    study_md, pictures, summary = study_sections(found, out)
    copied = [] if (out / RUNS_FILE).resolve() == runs_csv.resolve() else [
        write_runs_csv(rows, out / RUNS_FILE)]  # fmt: skip
    written = _write(out, sections + study_md, {"provenance": facts} | summary, None)
    return [*written, *copied, *pictures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_study.study.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="*", type=Path, help="run, sweep or study folders")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument("--command", help="the command that made the runs, for the header")
    parser.add_argument("--runs", type=Path, help="a study's runs.csv, judged without folders")
    parser.add_argument("--study", type=Path, help="the study.yaml of --runs")
    args = parser.parse_args(argv)
    try:
        if args.runs or args.study:
            if not (args.runs and args.study) or args.folders:
                raise CnnStudyError("--runs and --study go together, without folders")
            out = args.out or args.runs.parent
            written = write_report_from_runs(args.runs, args.study, out)
        elif args.folders:
            written = write_report(args.folders, args.out or args.folders[0], args.command)
        else:
            raise CnnStudyError("give run, sweep or study folders, or --runs and --study")
    except CnnStudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an output the user cannot write
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
