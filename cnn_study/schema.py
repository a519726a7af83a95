"""Config checks that turn typos and wrong types into one clear message before any work.

Hydra merges YAML silently: a misspelt key in a config file is just another key. Two
guards close that gap:
- `RunSchema`, a structured-config schema for the top level and the plain-value groups
  (`paths`, `regularization`): Hydra rejects unknown keys and wrong types there while
  composing, on the command line and inside YAML files alike.
- `check_targets`, for every node with a `_target_`: its keys must be parameters of the
  target and primitive values must fit the parameter's annotation.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from cnn_study.errors import CnnStudyError
from cnn_study.models.geometry import smallest_input_size

PRIMITIVES = (bool, int, float, str, type(None))


@dataclass
class PathsSchema:
    data_root: str = MISSING
    cache_dir: str = MISSING
    output_root: str = MISSING
    output_dir: str = MISSING


@dataclass
class ObjectiveSchema:
    """What a sweep optimises: a key of results.json and whether higher is better."""

    metric: str = "best_val/acc"
    direction: str = "maximize"  # or "minimize" (Optuna's words)


@dataclass
class RegularizationSchema:
    """`dropout` feeds the network's head, `weight_decay` the optimizer."""

    dropout: float | None = None  # None: the architecture's own (none in cnn_study's CNNs)
    weight_decay: float = 0.0


@dataclass
class RunSchema:
    """The top level of a run's config; the groups with a `_target_` are checked by
    `check_targets` against their target's signature."""

    seed: int = 0
    resume: Any = False  # true, false or "auto" (checked in train.run)
    start_over: bool = False  # move an earlier run in the folder aside, then train anew
    flush_denormal: bool = True
    eval_weights: str = "best"
    objective: ObjectiveSchema = field(default_factory=ObjectiveSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    regularization: RegularizationSchema = field(default_factory=RegularizationSchema)
    data: Any = MISSING
    arch: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    augmentation: Any = None
    loss: Any = MISSING
    mixing: Any = None
    tta: Any = None
    finetune: Any = MISSING
    module: Any = MISSING
    trainer: Any = MISSING
    logger: Any = field(default_factory=dict)
    callbacks: Any = field(default_factory=dict)


def register_schemas() -> None:
    """Make `run_schema` available to config.yaml's defaults list."""
    ConfigStore.instance().store(name="run_schema", node=RunSchema)


def _allowed(annotation: Any) -> tuple[set[type], set[Any]] | None:
    """(types, literal values) a primitive value may take, or None when not checkable."""
    origin = typing.get_origin(annotation)
    if annotation in PRIMITIVES:
        return {annotation}, set()
    if origin is Literal:
        return set(), set(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        literals: set[Any] = set()
        for arg in typing.get_args(annotation):
            allowed = _allowed(arg)
            if allowed is None:
                return None
            kinds |= allowed[0]
            literals |= allowed[1]
        return kinds, literals
    return None


def _fits(value: Any, kinds: set[type], literals: set[Any]) -> bool:
    if value in literals and type(value) in {type(v) for v in literals}:
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    return any(isinstance(value, kind) for kind in kinds if kind is not bool)


def _describe(kinds: set[type], literals: set[Any]) -> str:
    names = sorted("null" if k is type(None) else k.__name__ for k in kinds)
    return " or ".join(names + [repr(v) for v in sorted(literals, key=str)])


def _hints(target: Any) -> dict[str, Any]:
    try:
        function = target.__init__ if inspect.isclass(target) else target
        return typing.get_type_hints(inspect.unwrap(function))
    except Exception:  # unresolvable forward references: check names only
        return {}


# Targets whose **kwargs are passed on to another callable: keys are checked against both.
KWARGS_PASSED_TO = {
    "lightning.pytorch.loggers.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter",
}


def _signature(target_name: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any]] | None:
    """Parameters and type hints of a target, and of where its **kwargs go."""
    try:
        target = get_object(target_name)
        parameters = dict(inspect.signature(target).parameters)
    except Exception:
        return None  # an unknown target is reported by instantiate, with Hydra's own message
    hints = _hints(target)
    passed_to = KWARGS_PASSED_TO.get(target_name)
    if passed_to is not None:
        inner = _signature(passed_to)
        if inner is not None:
            parameters = {n: p for n, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
            parameters |= {n: p for n, p in inner[0].items() if n not in ("self", "log_dir")}
            hints = inner[1] | hints
    return parameters, hints


def check_node(node: DictConfig, key_path: str) -> None:
    """One `_target_` node: unknown keys and ill-typed primitive values are errors."""
    target_name = node.get("_target_")
    signature = _signature(target_name)
    if signature is None:
        return
    parameters, hints = signature
    from torch import nn  # the targets' modules import torch already

    var_keyword = next((p for p in parameters.values() if p.kind is p.VAR_KEYWORD), None)
    # **steps: nn.Module (augmentation.Pipeline): every extra key must be a node to build.
    wants_modules = var_keyword is not None and hints.get(var_keyword.name) is nn.Module
    for key in node:
        if str(key).startswith("_"):
            continue
        # An interpolation is not resolved here (`${hydra:…}` exists only in a run): its
        # key is checked, its value is the resolver's.
        interpolated = OmegaConf.is_interpolation(node, str(key))
        value = None if interpolated else node[key]
        if isinstance(value, DictConfig) and "_target_" in value:
            check_node(value, f"{key_path}.{key}")
            continue
        if key not in parameters and wants_modules:
            steps = [
                str(k) for k in node if isinstance(node[k], DictConfig) and "_target_" in node[k]
            ]
            close = difflib.get_close_matches(str(key), steps, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CnnStudyError(
                f"{key_path}.{key}: not a step of {target_name} (a step needs a _target_); "
                f"{hint}steps: {', '.join(steps) or 'none'}"
            )
        if key not in parameters:
            if var_keyword is not None:
                continue
            valid = [name for name in parameters if name not in ("self", "args", "kwargs")]
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CnnStudyError(
                f"{key_path}.{key}: {target_name} has no such parameter; {hint}"
                f"valid: {', '.join(valid)}"
            )
        allowed = _allowed(hints.get(str(key)))
        if interpolated or allowed is None:
            continue
        if isinstance(value, PRIMITIVES) and not _fits(value, *allowed):
            raise CnnStudyError(
                f"{key_path}.{key}={value!r}: expected {_describe(*allowed)} "
                f"(a parameter of {target_name})"
            )


@dataclass(frozen=True)
class Range:
    """The values a number may take: [low, high], either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    words: tuple[str, ...] = ()  # text it takes too (num_workers: auto)

    def allows(self, value: float | str) -> bool:
        if isinstance(value, str):
            return value in self.words
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        words = "".join(f" or {word}" for word in self.words)
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '≥'} {self.low:g}{words}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        high = f"{int(self.high)}" if self.integer else f"{self.high:g}"
        return f"{kind} in {left}{self.low:g}, {high}{right}{words}"


AT_LEAST_1 = Range(1, integer=True)
COUNT = Range(0, integer=True)
WORKERS = Range(0, integer=True, words=("auto",))
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)
PROBABILITY = Range(0, 1)

# The numbers a user can mistype, by group: a key anywhere in that group's nodes.
RANGES: dict[str, dict[str, Range]] = {
    "data": {"batch_size": AT_LEAST_1, "eval_batch_size": AT_LEAST_1, "num_workers": WORKERS,
             "val_size": AT_LEAST_1, "train_size": AT_LEAST_1, "test_size": AT_LEAST_1,
             "image_size": AT_LEAST_1, "num_classes": Range(2, integer=True),
             "val_fraction": Range(0, 1, True, True), "test_fraction": Range(0, 1, True, True),
             "crop_fraction": Range(0, 1, low_open=True)},
    "arch": {"input_size": AT_LEAST_1, "fc_hidden": AT_LEAST_1},
    "regularization": {"dropout": FRACTION, "weight_decay": NON_NEGATIVE},
    "optimizer": {"lr": POSITIVE, "weight_decay": NON_NEGATIVE, "momentum": FRACTION},
    "scheduler": {"step_size": AT_LEAST_1, "gamma": POSITIVE, "T_max": AT_LEAST_1,
                  "warmup_epochs": COUNT},
    "loss": {"label_smoothing": FRACTION},
    "mixing": {"mixup_alpha": NON_NEGATIVE, "cutmix_alpha": NON_NEGATIVE},
    "augmentation": {"p": PROBABILITY, "padding": COUNT, "brightness": NON_NEGATIVE,
                     "contrast": NON_NEGATIVE, "saturation": NON_NEGATIVE,
                     "degrees": NON_NEGATIVE},
    "finetune": {"frozen_stages": COUNT},
    "module": {"backbone_lr_scale": NON_NEGATIVE},
    "trainer": {"max_epochs": AT_LEAST_1},
    "callbacks": {"num_images": AT_LEAST_1, "grid_size": AT_LEAST_1, "decay": FRACTION},
}  # fmt: skip


def _numbers(node: Any, path: str) -> list[tuple[str, str, Any]]:
    """(key path, key, value) of every number — or text where a number belongs — written
    below `node`; interpolations are not resolved (a resolver may import torch:
    `${cnn_study.precision:…}`)."""
    found = []
    items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else []
    for key, value in items:
        key_path = f"{path}.{key}"
        if isinstance(value, DictConfig):
            found += _numbers(value, key_path)
        elif (isinstance(value, int | float | str) and not isinstance(value, bool)
              and not (isinstance(value, str) and "${" in value)):  # fmt: skip
            found.append((key_path, str(key), value))
    return found


EVAL_WEIGHTS = ("best", "last")
OBJECTIVE_DIRECTIONS = ("maximize", "minimize")
SEED = Range(0, 2**32 - 1, integer=True)


def check_ranges(cfg: DictConfig) -> None:
    """Every number a user can mistype is a number, in range, before any data is read."""
    for group, ranges in RANGES.items():
        for key_path, key, value in _numbers(cfg.get(group), group):
            allowed = ranges.get(key)
            if allowed is None:
                continue
            if not allowed.allows(value):
                raise CnnStudyError(f"{key_path}={value!r}: must be {allowed.describe()}")
    if not SEED.allows(cfg.get("seed", 0)):
        raise CnnStudyError(f"seed={cfg.seed!r}: must be {SEED.describe()}")
    data = cfg.get("data") or {}
    held_out = (data.get("val_fraction") or 0) + (data.get("test_fraction") or 0)
    if held_out >= 1:
        raise CnnStudyError(
            f"data.val_fraction + data.test_fraction = {held_out:g}: must be below 1 "
            "(the rest trains)"
        )
    warmup = (cfg.get("scheduler") or {}).get("warmup_epochs") or 0
    epochs = (cfg.get("trainer") or {}).get("max_epochs")
    if isinstance(epochs, int) and warmup >= epochs:
        raise CnnStudyError(
            f"scheduler.warmup_epochs={warmup}: must be below trainer.max_epochs={epochs} "
            "(the schedule runs after the warmup)"
        )
    arch = cfg.get("arch") or {}
    if str(arch.get("_target_", "")).endswith("build_cnn") and arch.get("input_size"):
        smallest = smallest_input_size(len(arch.channels), arch.get("padding", 1))
        if arch.input_size < smallest:
            raise CnnStudyError(
                f"arch.input_size={arch.input_size}: {len(arch.channels)} conv blocks with "
                f"padding {arch.get('padding', 1)} need at least {smallest} px"
            )


# Targets that need an optional extra: (module to import, the extra that installs it).
OPTIONAL_TARGETS = {"lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
                    "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb")}  # fmt: skip


def check_optional(node: DictConfig, key_path: str) -> None:
    """A target from an optional extra that is not installed: say which extra, before work."""
    needed = OPTIONAL_TARGETS.get(str(node.get("_target_")))
    if needed is not None and importlib.util.find_spec(needed[0]) is None:
        raise CnnStudyError(
            f"{key_path} needs the {needed[0]} package: pip install 'cnn_study[{needed[1]}]'"
        )


def check_config(cfg: DictConfig) -> None:
    """Reject mistyped targets, text where numbers belong and out-of-range values before
    any data is read (a run, and every part of a study before its first job)."""
    check_targets(cfg)
    check_ranges(cfg)
    if cfg.objective.direction not in OBJECTIVE_DIRECTIONS:
        raise CnnStudyError(
            f"objective.direction={cfg.objective.direction!r}; "
            f"choose one of {list(OBJECTIVE_DIRECTIONS)}"
        )
    if cfg.eval_weights not in EVAL_WEIGHTS:
        raise CnnStudyError(
            f"eval_weights={cfg.eval_weights!r}; choose one of {list(EVAL_WEIGHTS)}"
        )


def check_targets(cfg: DictConfig) -> None:
    """Check every node with a `_target_`: a group's own (`arch`, `optimizer`, …) and those
    a group lists by name (`callbacks.*`, `logger.*`), with their nested targets."""
    for group, node in cfg.items_ex(resolve=False):  # `${hydra:…}` exists only in a run
        if group == "hydra" or not isinstance(node, DictConfig):
            continue
        if "_target_" in node:
            check_optional(node, str(group))
            check_node(node, str(group))
            continue
        for name, child in node.items_ex(resolve=False):
            if isinstance(child, DictConfig) and "_target_" in child:
                check_optional(child, f"{group}.{name}")
                check_node(child, f"{group}.{name}")
