"""Which runs are a study part: exactly those whose composed config, seed aside, is the part's.

A run directory keeps Hydra's composed config, interpolations unresolved, in
`.hydra/config.yaml`; a part's config is composed here from its job overrides the same
way. Unresolved configs compare across machines (`${cnn_study.precision:…}` and the
output paths stay as written) while any changed value — one epoch instead of ten, another
lr, `debug=limit` — makes a run "other", never pooled into the part.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnn_study.config import CONFIG_NAME
from cnn_study.errors import CnnStudyError
from cnn_study.rundir import Run, changed_keys
from cnn_study.schema import check_config
from cnn_study.study.definition import PartSpec, Study

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
# What makes runs repeats of one configuration rather than different ones (how a run
# continues or starts is no part of what it trains).
REPEAT_KEYS = ("seed", "resume", "start_over")


def compose_config(overrides: list[str], as_study_job: bool = False) -> dict[str, Any]:
    """The app's config for `overrides`, unresolved, without Hydra's node (inside a running
    Hydra app too, where Hydra is initialised already). `as_study_job`: composed with
    Hydra's node under the study's sweeper, as the runner launches it, so that a part whose
    `hydra.*` settings the job could not compose is refused before any job starts."""
    hydra_node = []
    if as_study_job:
        from cnn_study.study.sweeper import register_sweeper

        register_sweeper()
        hydra_node = ["hydra/sweeper=cnn_study"]

    def composed() -> Any:
        return compose(CONFIG_NAME, [*overrides, *hydra_node], return_hydra_config=as_study_job)

    if GlobalHydra.instance().is_initialized():
        cfg = composed()
    else:
        with initialize_config_module(version_base="1.3", config_module="cnn_study.conf"):
            cfg = composed()
    if as_study_job:  # the checks a run makes before any data: the study makes them first
        check_config(cfg)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def without_nulls(node: Any) -> Any:
    """`node` without its null entries: an option a newer cnn_study adds with a null
    default (the old behaviour) leaves the config's meaning, and its runs' parts, as they were."""
    if isinstance(node, dict):
        return {key: without_nulls(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [without_nulls(value) for value in node]
    return node


def canonical(config: dict[str, Any], drop: Iterable[str] = ()) -> str:
    """A config as one comparable string, without the repeat keys, the `drop` keys and
    null entries."""
    config = without_nulls(json.loads(json.dumps(config, default=str)))
    for dotted in (*REPEAT_KEYS, *drop):
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(config, sort_keys=True)


def dropped_keys(part: PartSpec) -> tuple[str, ...]:
    """Keys that differ by seed within a part: the checkpoint it starts from."""
    return (part.checkpoint_from.key,) if part.checkpoint_from else ()


def part_configs(study: Study) -> dict[str, str]:
    """Each part's canonical config; a part that does not compose is one error line, and
    two parts of one configuration are refused (their runs could not be told apart)."""
    configs: dict[str, str] = {}
    for index, part in enumerate(study.parts):
        try:
            config = compose_config(study.job_overrides(part), as_study_job=True)
        except (HydraException, OmegaConfBaseException, ValueError, CnnStudyError) as error:
            reason = " ".join(str(error).split())
            raise CnnStudyError(
                f"{study.source}: parts[{index}].overrides ({part.name}): {reason}"
            ) from None
        configs[part.name] = canonical(config, dropped_keys(part))
    seen: dict[str, str] = {}
    for name, config in configs.items():
        if config in seen:
            raise CnnStudyError(
                f"{study.source}: parts {seen[config]!r} and {name!r} are one configuration; "
                "name it once and use that part in both claims"
            )
        seen[config] = name
    return configs


PARTS_FILE = "parts.json"  # each part's config as composed when its jobs first ran


def differing_keys(a: str, b: str) -> list[str]:
    """Dotted keys whose values differ between two canonical configs."""
    return changed_keys(json.loads(a), json.loads(b))


def read_recorded(folder: Path) -> dict[str, str]:
    """The part configs a study folder recorded ({} when it recorded none), in today's
    canonical form (older folders recorded null entries)."""
    path = folder / PARTS_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    return {name: canonical(json.loads(config)) for name, config in recorded.items()}


def recorded_configs(folder: Path, study: Study) -> dict[str, str]:
    """The parts' configs recorded in a study folder, composed for parts it lacks: runs
    stay members of their part when a later cnn_study composes the part differently."""
    recorded = read_recorded(folder)
    missing = [p for p in study.parts if p.name not in recorded]
    if missing:
        composed = part_configs(study)
        recorded |= {p.name: composed[p.name] for p in missing}
    return {p.name: recorded[p.name] for p in study.parts}


def run_config(run: Run) -> dict[str, Any] | None:
    path = run.path / HYDRA_CONFIG
    if not path.is_file():
        return None
    container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return container if isinstance(container, dict) else None


def assign(
    study: Study, configs: dict[str, str], runs: list[Run]
) -> tuple[dict[str, list[Run]], list[Run]]:
    """(the runs of each part, the other runs) — exact membership."""
    members: dict[str, list[Run]] = {part.name: [] for part in study.parts}
    others: list[Run] = []
    drops = {dropped_keys(part) for part in study.parts}
    by_config = {(dropped_keys(p), configs[p.name]): p.name for p in study.parts}
    for run in runs:
        config = run_config(run)
        part = None
        if config is not None:
            part = next(
                (by_config[(d, canonical(config, d))] for d in drops
                 if (d, canonical(config, d)) in by_config),
                None,
            )  # fmt: skip
        (members[part] if part else others).append(run)
    return members, others
