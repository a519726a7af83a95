"""What each experiment logger shows beyond Lightning's scalars — the test-time figures,
the run's config beside its test metrics, a resume — behind one small interface,
`LoggerOutput`. A logger is one YAML in `conf/logger/` (its Lightning class as `_target_`)
and, for more than scalars and the config, one module here naming that class in `LOGGER`
and subclassing `LoggerOutput` as `Output` (see `wandb.py`); nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any


class LoggerOutput:
    """The default for any Lightning logger: the config through its own
    `log_hyperparams`, no figures, nothing special on resume."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @classmethod
    def resume_arguments(cls, resumed_step: int) -> dict[str, Any]:
        """Construction arguments of a logger that continues a run at `resumed_step`."""
        return {}

    def figure(self, path: Path, name: str, step: int) -> None:
        """Show a figure already saved as the PNG `path` under `name`."""

    def config(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's config, linked to its test metrics where the logger can."""
        self.logger.log_hyperparams(params)

    def close(self) -> None:
        """End the logger's record of the run (after Lightning's `finalize`)."""


@cache
def outputs() -> dict[str, type[LoggerOutput]]:
    """Every module of this package: its logger's class path → its `Output` class."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        found[loaded.LOGGER] = loaded.Output
    return found


def output_class(target: str) -> type[LoggerOutput]:
    """The output of a logger named by its `_target_` (before it is built)."""
    return outputs().get(target, LoggerOutput)


def output_for(logger: Any) -> LoggerOutput:
    """The output of a built logger, found by its class."""
    for klass in type(logger).__mro__:
        name = f"{klass.__module__}.{klass.__qualname__}"
        if name in outputs():
            return outputs()[name](logger)
        public = f"lightning.pytorch.loggers.{klass.__qualname__}"  # its documented path
        if klass.__module__.startswith("lightning.pytorch.loggers") and public in outputs():
            return outputs()[public](logger)
    return LoggerOutput(logger)
