"""A study as data: parts (overrides of the cnn_study app), seeds, claims, scales.

A study file (`conf/study/a.yaml`, or any user's YAML) is read into `Study`; `read_study`
checks it like every config: unknown keys and wrong types (OmegaConf's structured merge),
duplicate parts, claims naming unknown parts, overrides that do not compose. Every problem
is one `CnnStudyError` line naming the file and the key.

Keys (see README, "Your own study"):
- `title`, `protocol` (overrides every part shares), `seeds`;
- `parts`: `name`, `overrides`, optional `baseline` (compared seed by seed in the report),
  `published` (the study's own figures, e.g. {test/acc: 0.7379}), `needs` (what a part needs
  that may be missing, e.g. ImageNet weights), `family` (parts pictured together; default
  the name's first word), `seeds` (instead of the study's), `checkpoint_from` (train from
  another part's best checkpoint of the same seed: {part: ..., key: finetune.from_checkpoint});
- `claims`: `text`, `order` (each part beats the next one on `metric`, default test/acc,
  any metric a run records; `direction`: higher or lower is better, default the metric's);
- `alpha`: the chance of any false verdict in the whole study, at most (default 0.05;
  `study.alpha=` on the command line overrides it);
- `scales`: named variants, e.g. `cpu: {description, overrides, parts: {<part>: [...]}}`,
  chosen with `study.scale=cpu`; their overrides are the deviations the report lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnn_study.errors import CnnStudyError
from cnn_study.metrics import is_proportion, recorded_metrics

STUDY_FILE = "study.yaml"  # the effective study, saved in its folder; the report reads it
DEFAULT_METRIC = "test/acc"


@dataclass
class CheckpointFrom:
    """Start a part from another part's best checkpoint of the same seed (transfer)."""

    part: str = MISSING
    key: str = "finetune.from_checkpoint"


@dataclass
class PartSpec:
    name: str = MISSING
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None
    published: dict[str, float] = field(default_factory=dict)
    needs: str | None = None
    family: str | None = None
    seeds: list[int] | None = None
    checkpoint_from: CheckpointFrom | None = None

    @property
    def slug(self) -> str:
        """The part's folder name in the study folder: 'A2 4 conv' → 'a2_4_conv'."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")

    @property
    def family_name(self) -> str:
        return self.family or self.name.split()[0]


@dataclass
class ClaimSpec:
    """Each part of `order` beats the next on `metric` by more than `margin`.

    `metrics`: one metric per entry of `order` instead, for a claim within a part (B1
    overfits: [B1, B1] on [train/acc, val/acc]). A negative `margin` claims "does not
    fall short by more than −margin" (the last conv does not beat the head by much:
    [head, last conv], margin −0.02)."""

    text: str = MISSING
    order: list[str] = MISSING
    metric: str = DEFAULT_METRIC
    metrics: list[str] | None = None
    margin: float = 0.0
    direction: str | None = None  # "higher" or "lower" is better; None: the metric's own

    def metric_of(self, position: int) -> str:
        return self.metrics[position] if self.metrics else self.metric

    @property
    def lower_is_better(self) -> bool:
        """Whether "beats" means a lower value (the claim's direction, else its metric's)."""
        if self.direction is not None:
            return self.direction == "lower"
        return not recorded_metrics().get(self.metric_of(0), True)

    @property
    def direction_text(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"

    def entries(self) -> list[tuple[str, str]]:
        """(part, metric) of each position of `order`."""
        return [(name, self.metric_of(i)) for i, name in enumerate(self.order)]


@dataclass
class ScaleSpec:
    """A named variant of the protocol (e.g. `cpu`): its overrides are its deviations."""

    description: str = ""
    overrides: list[str] = field(default_factory=list)
    parts: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RunSettings:
    """How this study folder is run: recorded with the study, so that a report and a
    second invocation know what the jobs were."""

    scale: str | None = None
    overrides: list[str] = field(default_factory=list)  # given to every job by the user
    until_resolved: bool = False
    max_seeds: int = 10
    max_looks: int = 3  # the study's α is split over this many planned looks
    command: str | None = None  # the command line that ran the study, for the report


@dataclass
class Study:
    title: str = MISSING
    alpha: float = 0.05  # the chance of any false verdict in the whole study, at most
    protocol: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    parts: list[PartSpec] = field(default_factory=list)
    claims: list[ClaimSpec] = field(default_factory=list)
    scales: dict[str, ScaleSpec] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    source: str = ""  # where the definition was read from

    @property
    def parts_by_name(self) -> dict[str, PartSpec]:
        return {part.name: part for part in self.parts}

    def part_seeds(self, part: PartSpec) -> list[int]:
        return list(part.seeds if part.seeds is not None else self.seeds)

    def job_overrides(self, part: PartSpec) -> list[str]:
        """Every override of a part's jobs, seed aside: protocol, scale, part, user."""
        scale = self.scales[self.run.scale] if self.run.scale else ScaleSpec()
        return merge_overrides(
            self.protocol,
            scale.overrides,
            part.overrides,
            scale.parts.get(part.name, []),
            self.run.overrides,
        )

    def deviations(self) -> list[str]:
        """The scale's overrides, as lines for a report header."""
        if not self.run.scale:
            return []
        scale = self.scales[self.run.scale]
        lines = [f"every part: {' '.join(scale.overrides)}"] if scale.overrides else []
        lines += [f"{name}: {' '.join(o)}" for name, o in scale.parts.items() if o]
        return lines

    def dependency_order(self) -> list[list[PartSpec]]:
        """Parts in waves: a part that starts from another's checkpoint comes after it."""
        waves: list[list[PartSpec]] = []
        placed: set[str] = set()
        remaining = list(self.parts)
        while remaining:
            wave = [
                p
                for p in remaining
                if p.checkpoint_from is None or p.checkpoint_from.part in placed
            ]
            if not wave:
                raise CnnStudyError(
                    f"{self.source}: parts[].checkpoint_from: a cycle among "
                    f"{', '.join(p.name for p in remaining)}"
                )
            waves.append(wave)
            placed |= {p.name for p in wave}
            remaining = [p for p in remaining if p.name not in placed]
        return waves

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.structured(self))

    @property
    def planned_looks(self) -> int:
        """K: the looks α is spent over (one unless seeds are added until resolved)."""
        return self.run.max_looks if self.run.until_resolved else 1

    def look_plan(self) -> dict[str, Any]:
        """What a study folder fixes at its first look: a later look at another α, another
        number of looks or another seed budget would spend more than α."""
        return {"alpha": self.alpha, "looks": self.planned_looks,
                "max_seeds": self.run.max_seeds if self.run.until_resolved else None}  # fmt: skip

    def identity(self) -> dict[str, list[str]]:
        """Each part's job overrides: what decides the jobs in a part's folder. A second
        invocation on the same folder must agree on the parts both name."""
        return {part.name: self.job_overrides(part) for part in self.parts}


def override_key(override: str) -> str:
    """The key an override sets: '+a.b=1' → 'a.b', '~c' → 'c', 'data=fake' → 'data'."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*lists: list[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one of the same key."""
    merged: dict[str, str] = {}
    for overrides in lists:
        for override in overrides:
            key = override_key(override)
            merged.pop(key, None)
            merged[key] = override
    return list(merged.values())


def bundled_studies() -> list[str]:
    """Names of the studies that ship with cnn_study (conf/study/*.yaml)."""
    folder = resources.files("cnn_study.conf") / "study"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def study_path(name_or_path: str) -> Path:
    """A bundled study by name (`a`), or a YAML file by path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise CnnStudyError(f"study={name_or_path}: no such file")
        return candidate
    bundled = resources.files("cnn_study.conf") / "study" / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise CnnStudyError(
            f"study={name_or_path}: no such study; bundled: {', '.join(bundled_studies())}, "
            "or give the path of a study YAML file"
        )
    return Path(str(bundled))


def _escaped(value: Any) -> Any:
    """Strings with `${` escaped for OmegaConf (it gives them back as written)."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    """A study file's mapping; a syntax error (with its line and column) or another shape
    is one line naming the file."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CnnStudyError(f"{path}: {where}YAML syntax: {problem}") from None
    except OSError as error:
        raise CnnStudyError(f"{path}: {error.strerror or error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CnnStudyError(
            f"{path}: a study file is a mapping (title, seeds, parts, claims, …), not a "
            f"{type(loaded).__name__}"
        )
    return loaded


def read_study(path: Path, run: dict[str, Any] | None = None) -> Study:
    """Parse and check a study file (`run`: settings from the command line)."""
    loaded = load_yaml(path)
    try:
        # Escaped: an override's ${...} is for the job's config, not for the study file.
        run = dict(run or {})
        if isinstance(loaded, dict) and isinstance(loaded.get("run"), dict):
            # study folders of cnn_study ≤ 0.1 saved alpha among the run settings
            loaded.setdefault("alpha", loaded["run"].pop("alpha", 0.05))
        raw = OmegaConf.create(_escaped(loaded))
        merged = OmegaConf.merge(OmegaConf.structured(Study), raw)
        if "alpha" in run:
            merged = OmegaConf.merge(merged, {"alpha": run.pop("alpha")})
        if run:
            merged = OmegaConf.merge(merged, {"run": _escaped(run)})
        study: Study = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        reason = str(error).splitlines()[0]
        raise CnnStudyError(f"{path}: {key + ': ' if key else ''}{reason}") from None
    study.source = str(path)
    check_study(study)
    return study


def _problems(study: Study) -> Iterator[str]:
    if not study.parts:
        yield "parts: a study needs at least one part"
    names: set[str] = set()
    slugs: dict[str, str] = {}
    for index, part in enumerate(study.parts):
        if part.name in names:
            yield f"parts[{index}].name: duplicate part {part.name!r}"
        if part.slug in slugs and part.name not in names:
            yield (f"parts[{index}].name: {part.name!r} and {slugs[part.slug]!r} share the "
                   f"folder name {part.slug!r}")  # fmt: skip
        names.add(part.name)
        slugs.setdefault(part.slug, part.name)
    known = ", ".join(p.name for p in study.parts)
    for index, part in enumerate(study.parts):
        if part.baseline is not None and part.baseline not in names:
            yield f"parts[{index}].baseline: unknown part {part.baseline!r} (parts: {known})"
        if part.baseline == part.name:
            yield f"parts[{index}].baseline: {part.name!r} cannot be its own baseline"
        source = part.checkpoint_from
        if source is not None and source.part not in names:
            yield (
                f"parts[{index}].checkpoint_from.part: unknown part {source.part!r} "
                f"(parts: {known})"
            )
        if part.seeds is not None and not part.seeds:
            yield f"parts[{index}].seeds: empty"
    recorded = recorded_metrics()
    for index, part in enumerate(study.parts):
        for metric, value in part.published.items():
            if metric not in recorded:
                yield (f"parts[{index}].published: {metric!r} is not a metric runs record; "
                       f"choose among {', '.join(recorded)}")  # fmt: skip
            elif is_proportion(metric) and not 0 <= value <= 1:
                yield (f"parts[{index}].published.{metric}={value:g}: a proportion, in "
                       f"[0, 1] (e.g. {value / 100:g} for {value:g} %)")  # fmt: skip
    for index, claim in enumerate(study.claims):
        if len(claim.order) < 2:
            yield f"claims[{index}].order: name at least two parts, best first"
        for name in claim.order:
            if name not in names:
                yield f"claims[{index}].order: unknown part {name!r} (parts: {known})"
        if claim.metrics is not None and len(claim.metrics) != len(claim.order):
            yield (f"claims[{index}].metrics: {len(claim.metrics)} metrics for "
                   f"{len(claim.order)} parts of order; give one metric a part")  # fmt: skip
        elif len(set(claim.entries())) != len(claim.order):
            yield (f"claims[{index}].order: a part twice on one metric; to compare a part "
                   "with itself give metrics: one a position")  # fmt: skip
        recorded = recorded_metrics()
        for metric in claim.metrics or [claim.metric]:
            if metric not in recorded:
                yield (f"claims[{index}].metric: {metric!r} is not a metric runs record; "
                       f"choose one of {', '.join(recorded)}")  # fmt: skip
        if claim.direction not in (None, "higher", "lower"):
            yield (f"claims[{index}].direction: {claim.direction!r}; choose higher or lower "
                   "(is better), or leave it out for the metric's own")  # fmt: skip
    if not study.seeds:
        yield "seeds: empty"
    if len(set(study.seeds)) != len(study.seeds):
        yield f"seeds: repeated values in {study.seeds}"
    for name, scale in study.scales.items():
        for part in scale.parts:
            if part not in names:
                yield f"scales.{name}.parts: unknown part {part!r} (parts: {known})"
    if study.run.scale is not None and study.run.scale not in study.scales:
        yield (f"study.scale={study.run.scale}: no such scale; scales: "
               f"{', '.join(study.scales) or 'none'}")  # fmt: skip
    if study.run.max_seeds < 1 or study.run.max_looks < 1:
        yield "study.max_seeds and study.max_looks: must be at least 1"
    if not 0 < study.alpha < 1:
        yield f"alpha={study.alpha}: must be in (0, 1) (the study's chance of a false verdict)"
    most = max((len(study.part_seeds(p)) for p in study.parts), default=0)
    if study.run.until_resolved and study.run.max_seeds < most:
        yield (f"study.max_seeds={study.run.max_seeds}: below the {most} seeds the study "
               "declares; give at least as many")  # fmt: skip


def check_study(study: Study) -> None:
    """The definition's own consistency (composition is checked by `check_composes`)."""
    problem = next(_problems(study), None)
    if problem is not None:
        raise CnnStudyError(f"{study.source}: {problem}")
    study.dependency_order()  # a cycle is an error
