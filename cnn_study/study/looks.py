"""Looks at a study's claims: a look is a completed round of jobs, judged once.

The declared seeds are the first round; with `study.until_resolved`, each look names the
parts of unresolved claims and the seeds they should reach, and the next round runs them.
Every look is recorded in the study folder's `looks.json` with the level it was judged at:
the study's α is spent evenly over its K planned looks (`evidence.ErrorControl`), so α,
K and the seed budget are fixed there at the first look (`check_plan`).

`run_rounds` is the one loop both the study sweeper (jobs through a Hydra launcher) and
the calibration simulation (drawn accuracies, `cnn_study.study.calibration`) run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnn_study.errors import CnnStudyError
from cnn_study.rundir import read_json
from cnn_study.study import evidence
from cnn_study.study.definition import STUDY_FILE, Study, read_study

LOOKS_FILE = "looks.json"
log = logging.getLogger("cnn_study.study")

Seeds = dict[str, list[int]]


def control_of(study: Study) -> evidence.ErrorControl:
    return evidence.ErrorControl(study.alpha, study.planned_looks)


def extended_seeds(declared: list[int], count: int) -> list[int]:
    """The first `count` seeds: the declared ones, then the next unused integers."""
    seeds = list(declared[:count])
    candidate = max(declared, default=-1) + 1
    while len(seeds) < count:
        seeds.append(candidate)
        candidate += 1
    return seeds


def planned_seeds(study: Study, looks: list[dict[str, Any]]) -> Seeds:
    """The seeds of every part: the declared ones, extended by the looks' targets."""
    seeds = {p.name: study.part_seeds(p) for p in study.parts}
    for look in looks:
        for name, count in look.get("targets", {}).items():
            if name in seeds:
                declared = study.part_seeds(study.parts_by_name[name])
                seeds[name] = extended_seeds(declared, max(count, len(seeds[name])))
    return seeds


def run_rounds(
    study: Study,
    looks: list[dict[str, Any]],
    run_round: Callable[[Seeds], None],
    observe: Callable[[], dict[str, evidence.PartRuns]],
    save: Callable[[list[dict[str, Any]]], None],
    unfinished: Callable[[Seeds], list[str]] = lambda seeds: [],
) -> list[dict[str, Any]]:
    """Run the rounds not run yet, a look after each: the declared seeds, then (until
    resolved) the seeds the last look named. `looks`: those recorded so far (a study that
    was stopped continues the round it had decided). A round whose jobs did not all end
    (`unfinished`: failed, interrupted — a fixable error, a stop) is no look yet: the same
    command runs them again and looks then."""
    control = control_of(study)
    seeds = planned_seeds(study, looks)
    run_round(seeds)
    while len(looks) < control.looks:
        waiting = unfinished(seeds)
        if waiting:
            log.warning(
                "study: no look yet, %d jobs of the round did not finish (%s); run the same "
                "command again to run them and look", len(waiting), ", ".join(waiting[:4]),
            )  # fmt: skip
            break
        parts = observe()
        results = evidence.judge_all(study, parts, control)
        last = len(looks) + 1 == control.looks
        targets = {} if last else evidence.seed_targets(study, parts, control, results)
        looks.append(control.as_dict() | {
            "look": len(looks) + 1,
            "tests": evidence.tests_at_look(results),
            "seeds": {name: p.seeds for name, p in parts.items()},
            "verdicts": {r.claim.text: r.verdict for r in results},
            "targets": targets,
        })  # fmt: skip
        save(looks)
        if not targets:
            break
        seeds = planned_seeds(study, looks)
        run_round(seeds)
    return looks


def read_looks(folder: Path) -> list[dict[str, Any]]:
    return list(read_json(folder / LOOKS_FILE).get("looks", []))


def recorded_plan(folder: Path) -> dict[str, Any] | None:
    """The α, K and seed budget a folder fixed at its first look; None before one."""
    data = read_json(folder / LOOKS_FILE)
    if not data.get("looks"):
        return None
    if "plan" in data:
        return dict(data["plan"])
    return read_study(folder / STUDY_FILE).look_plan()  # looks.json of cnn_study ≤ 0.1


def check_plan(study: Study, folder: Path) -> None:
    """A folder with a recorded look keeps its α, K and seed budget: levels spent at
    other values could sum past α."""
    plan = recorded_plan(folder)
    if plan is None:
        return
    wanted = study.look_plan()
    changed = [key for key in wanted if plan.get(key) != wanted[key]]
    if changed:
        given = ", ".join(f"{key}={wanted[key]} (recorded {plan.get(key)})" for key in changed)
        raise CnnStudyError(
            f"study folder {folder} fixed its error control at its first look; this command "
            f"gives {given}. Continue with the recorded values, or choose another folder "
            "with study.dir=..."
        )
