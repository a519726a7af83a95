"""`python -m cnn_study.study study=<name|path.yaml> [study.KEY=VALUE ...] [overrides ...]`

Runs a study — every part × seed of a study file — as one Hydra multirun in one folder,
then writes report.md / report.csv / report.json and the pictures there.

  study=a | b | path/to/my_study.yaml   the study (bundled: conf/study/*.yaml)
  study.dir=PATH          the study folder (default $CNN_STUDY_OUTPUT/studies/<name>, with
                          _<scale> appended for a scale); the same command again continues
                          it: completed jobs are not run again, interrupted ones resume
  study.scale=NAME        a named variant of the protocol declared in the study file (cpu)
  study.until_resolved=true   after the declared seeds, add seeds to the parts of
                          unresolved claims, in rounds (error rate split over the looks)
  study.max_seeds=N       at most N seeds a part (default 10)
  study.max_looks=K       planned looks at the claims (default 3)
  study.alpha=A           the chance of any false verdict in the whole study, at most
                          (default: the study file's alpha, else 0.05); split over the K
                          looks. α, K and max_seeds are fixed in the folder at its first look
  hydra/launcher=joblib hydra.launcher.n_jobs=2   jobs side by side (or =slurm)
  anything else           an override of every job, e.g. data.num_workers=2

Examples:
  python -m cnn_study.study study=a
  python -m cnn_study.study study=b study.scale=cpu
  python -m cnn_study.study study=a study.until_resolved=true study.max_seeds=8
  python -m cnn_study.study study=my_study.yaml hydra/launcher=joblib hydra.launcher.n_jobs=4
  python -m cnn_study.study.report <study folder>      # the report again, from the runs
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnn_study.errors import CnnStudyError
from cnn_study.paths import output_root
from cnn_study.study.definition import STUDY_FILE, Study, read_study, study_path
from cnn_study.study.looks import check_plan
from cnn_study.study.membership import PARTS_FILE, differing_keys, part_configs, read_recorded

SETTINGS = ("dir", "scale", "until_resolved", "max_seeds", "max_looks", "alpha")


def parse(argv: list[str]) -> tuple[str, dict[str, Any], list[str], list[str]]:
    """(study, study.* settings, hydra overrides, overrides of every job)."""
    name, settings, hydra_args, job_args = None, {}, [], []
    for argument in argv:
        key, _, value = argument.partition("=")
        if key == "study":
            name = value
        elif key.startswith("study."):
            setting = key.removeprefix("study.")
            if setting not in SETTINGS:
                raise CnnStudyError(f"{key}: no such setting; study settings: "
                                    f"{', '.join('study.' + s for s in SETTINGS)}")  # fmt: skip
            try:
                settings[setting] = OmegaConf.from_dotlist([f"v={value}"])["v"]
            except OmegaConfBaseException as error:
                raise CnnStudyError(f"{argument}: {error}") from None
        elif argument in ("-m", "--multirun"):
            continue  # a study is a multirun already
        elif key.lstrip("+~").startswith(("hydra.", "hydra/")):
            hydra_args.append(argument)
        else:
            job_args.append(argument)
    if not name:
        raise CnnStudyError("give the study: study=<name> or study=<path.yaml> (see --help)")
    return name, settings, hydra_args, job_args


def prepare(argv: list[str]) -> tuple[Study, Path, list[str]]:
    """Read and check the study, choose its folder, refuse a folder that ran other jobs,
    save the effective study there. Returns it, its folder and the Hydra overrides."""
    name, settings, hydra_args, job_args = parse(argv)
    path = study_path(name)
    folder_setting = settings.pop("dir", None)
    run = {**settings, "overrides": job_args,
           "command": shlex.join(["python", "-m", "cnn_study.study", *argv])}  # fmt: skip
    study = read_study(path, run)
    configs = part_configs(study)  # every part composes, no two are one configuration
    name = path.stem + (f"_{study.run.scale}" if study.run.scale else "")
    folder = (
        Path(folder_setting).expanduser() if folder_setting else output_root() / "studies" / name
    )
    check_folder(study, folder, configs)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STUDY_FILE).write_text(study.to_yaml())
    (folder / PARTS_FILE).write_text(json.dumps(configs, indent=1) + "\n")
    return study, folder, hydra_args


def trained_in(part_folder: Path) -> bool:
    """Whether a part's folder holds a run that trained: one with a checkpoint. A run that
    stopped before any (rejected for absent weights or a missing data root, also as older
    cnn_study versions recorded it: failed) ties the part to nothing."""
    return any(part_folder.glob("*/checkpoints/*.ckpt"))


def check_folder(study: Study, folder: Path, configs: dict[str, str]) -> None:
    """A folder holds one study's jobs: a part that has trained runs there must keep its
    overrides and its composed config (a newer cnn_study may compose it
    differently: its new jobs would not be repeats of the old ones)."""
    saved = folder / STUDY_FILE
    if not saved.is_file():
        return
    check_plan(study, folder)
    before = read_study(saved).identity()
    for name, overrides in study.identity().items():
        has_runs = trained_in(folder / study.parts_by_name[name].slug)
        if has_runs and name in before and before[name] != overrides:
            raise CnnStudyError(
                f"study folder {folder} ran part {name!r} with {before[name]}; this command "
                f"gives {overrides}. Continue with the same overrides, or choose another "
                "folder with study.dir=..."
            )
    recorded = read_recorded(folder)
    for part in study.parts:
        has_runs = trained_in(folder / part.slug)
        if has_runs and part.name in recorded and recorded[part.name] != configs[part.name]:
            keys = differing_keys(recorded[part.name], configs[part.name])
            raise CnnStudyError(
                f"study folder {folder}: part {part.name!r} now composes to another config "
                f"than its runs there ({', '.join(keys[:6])} changed, e.g. by a newer "
                "cnn_study); its new seeds would not repeat the old ones. Choose another "
                "folder with study.dir=..."
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        study, folder, hydra_args = prepare(argv)
    except CnnStudyError as problem:
        print(f"cnn_study.study: error: {problem}", file=sys.stderr)
        return 2
    except OSError as error:  # study.dir= a folder that cannot be made or written
        print(f"cnn_study.study: error: study.dir: {error.filename or ''}: "
              f"{error.strerror or error}", file=sys.stderr)  # fmt: skip
        return 2
    from cnn_study.__main__ import cli
    from cnn_study.study.sweeper import quoted, register_sweeper

    register_sweeper()

    sys.argv = [
        "cnn_study", "-m", "hydra/sweeper=cnn_study",
        f"hydra.sweeper.study={quoted(str(folder / STUDY_FILE))}",
        f"hydra.sweep.dir={quoted(str(folder))}",
        *hydra_args,
    ]  # fmt: skip
    print(f"study {study.title!r}: {len(study.parts)} parts in {folder}", flush=True)
    cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())
