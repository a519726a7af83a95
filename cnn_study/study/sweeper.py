"""The study as one Hydra multirun: every part × seed is one job of the configured launcher.

`hydra/sweeper=cnn_study` (the plugin in `hydra_plugins/cnn_study_sweeper`) hands the
launcher the study's jobs as batches — basic (one after another), joblib (side by side)
or submitit/SLURM (a job array) — so the study fans out like any Hydra sweep. A sweeper
rather than a loop of multiruns: one launch per round, the launcher decides the
parallelism, and the rounds of `study.until_resolved` (which need the results of the
previous round) live inside that one multirun.

Each job runs in `<study folder>/<part>/seed<k>` with `resume=auto`: a job that completed
is not launched again, an interrupted one continues from its `last.ckpt`. A part that
starts from another's checkpoint (`checkpoint_from`) runs in a later batch than it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnn_study.rundir import (
    COMPLETED,
    DIVERGED,
    REJECTED,
    find_runs,
    read_results,
    write_json_atomic,
)
from cnn_study.study import evidence
from cnn_study.study.definition import PartSpec, Study
from cnn_study.study.looks import LOOKS_FILE, read_looks, run_rounds
from cnn_study.study.membership import assign, recorded_configs
from cnn_study.study.report import write_report

log = logging.getLogger("cnn_study.study")

Launch = Callable[[list[list[str]]], Sequence[Any]]


def register_sweeper() -> None:
    """Make `hydra/sweeper=cnn_study` known. Hydra finds plugins by listing the
    `hydra_plugins` namespace, which an editable install (`pip install -e`) hides behind
    an import hook; importing the plugin and registering it works for every install."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.cnn_study_sweeper.study_sweeper import StudySweeper

    Plugins.instance().register(StudySweeper)


def quoted(value: str) -> str:
    """A value as one Hydra override token (paths may hold spaces, '=' or ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class StudyRun:
    """Runs a study's jobs in its folder through `launch`, round after round."""

    def __init__(self, study: Study, folder: Path, launch: Launch) -> None:
        self.study = study
        self.folder = folder
        self.launch = launch
        self.configs = recorded_configs(folder, study)

    def job_dir(self, part: PartSpec, seed: int) -> Path:
        return self.folder / part.slug / f"seed{seed}"

    def completed(self, part: PartSpec, seed: int) -> bool:
        return read_results(self.job_dir(part, seed)).get("status") == COMPLETED

    def unfinished(self, seeds: dict[str, list[int]]) -> list[str]:
        """The round's jobs that did not end for good: failed (a crash or a fixable error),
        interrupted, never started. Completed, rejected (refused before training: a part
        that needs absent weights) and diverged jobs have ended."""
        ended = (COMPLETED, REJECTED, DIVERGED)
        return [
            f"{part.slug}/seed{seed}"
            for part in self.study.parts
            for seed in seeds.get(part.name, [])
            if read_results(self.job_dir(part, seed)).get("status") not in ended
            and self.source_checkpoint(part, seed) is not None  # else it waits on its source
        ]

    def source_checkpoint(self, part: PartSpec, seed: int) -> str | None:
        """The checkpoint a transfer part's job starts from ('' for a part that starts
        from none); None while its source job has not completed."""
        source = part.checkpoint_from
        if source is None:
            return ""
        origin = self.study.parts_by_name[source.part]
        results = read_results(self.job_dir(origin, seed))
        checkpoint = results.get("checkpoint_best") or results.get("checkpoint_last")
        return checkpoint if results.get("status") == COMPLETED and checkpoint else None

    def job(self, part: PartSpec, seed: int) -> list[str] | None:
        """The job's overrides; None when the checkpoint it starts from is missing."""
        overrides = [
            *self.study.job_overrides(part),
            f"seed={seed}",
            "resume=auto",
            f"hydra.sweep.subdir={part.slug}/seed{seed}",
        ]
        checkpoint, source = self.source_checkpoint(part, seed), part.checkpoint_from
        if source is None:
            return overrides
        if checkpoint is None:
            log.warning(
                "%s seed %d not run: it starts from %s seed %d, which has not completed",
                part.name, seed, source.part, seed,
            )  # fmt: skip
            return None
        return [*overrides, f"{source.key}={quoted(checkpoint)}"]

    def run_seeds(self, seeds: dict[str, list[int]]) -> None:
        """Launch every job of `seeds` not completed yet, one batch per dependency wave."""
        for wave in self.study.dependency_order():
            batch = []
            done = 0
            # Seed-major: an interrupted study has every part at its first seeds.
            jobs = sorted(
                ((seed, index, part) for index, part in enumerate(wave)
                 for seed in seeds.get(part.name, [])),
                key=lambda job: (job[0], job[1]),
            )  # fmt: skip
            for seed, _, part in jobs:
                if self.completed(part, seed):
                    done += 1
                    continue
                job = self.job(part, seed)
                if job is not None:
                    batch.append(job)
            if done:
                log.info("study: %d jobs of this batch already completed, not run again", done)
            if batch:
                log.info("study: launching %d jobs (%s)", len(batch),
                         ", ".join(p.name for p in wave))  # fmt: skip
                self.launch(batch)

    def parts(self) -> dict[str, evidence.PartRuns]:
        members, _ = assign(self.study, self.configs, find_runs([self.folder]))
        return evidence.collect(self.study, members)

    def run(self) -> list[Path]:
        """The rounds not run yet, a look recorded in looks.json after each (see
        `cnn_study.study.looks`); then the report."""
        study = self.study

        def save(looks: list[dict[str, Any]]) -> None:
            write_json_atomic(self.folder / LOOKS_FILE, {"plan": study.look_plan(),
                                                         "looks": looks})  # fmt: skip
            look = looks[-1]
            log.info("study: look %d of %d: %s", look["look"], study.planned_looks,
                     look["verdicts"])  # fmt: skip

        run_rounds(study, read_looks(self.folder), self.run_seeds, self.parts, save,
                   self.unfinished)  # fmt: skip
        written = write_report([self.folder], self.folder, study.run.command)
        log.info("study: report %s", written[0])
        return written
