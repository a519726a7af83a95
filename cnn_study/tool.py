"""The command line of cnn_study's tools (`explain`, `predict`, `export`): key=value
arguments checked against a dataclass, one-line errors with exit code 2, `--help`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnn_study.errors import CnnStudyError

Args = TypeVar("Args")


def run_tool(
    doc: str | None, schema: type[Args], work: Callable[[Args], Any], argv: list[str] | None
) -> int:
    """Parse `argv` (key=value; a typo'd key is an error) into `schema`, call `work` and
    print the paths or lines it returns; errors the user can fix end in one line, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(doc)
        return 0
    try:
        args = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
        missing = sorted(OmegaConf.missing_keys(args))
        if missing:
            raise CnnStudyError(f"missing: {', '.join(missing)} (see --help)")
        produced = work(OmegaConf.to_object(args))  # type: ignore[arg-type]
    except (CnnStudyError, OmegaConfBaseException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an output the user cannot write (read-only, not a folder)
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    for line in produced or []:
        print(line)
    return 0


def refuse_overwrite(targets: Sequence[Path], overwrite: bool, key: str) -> None:
    """A tool never replaces an earlier output silently: existing `targets` are an error
    that names them, unless `overwrite=true`."""
    existing = [path for path in targets if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise CnnStudyError(
            f"{existing[0]}{more} exists already; choose another {key}=... or add "
            "overwrite=true to replace"
        )


def relative_outputs(files: Sequence[Path], folder: Path, suffix: str) -> list[Path]:
    """One output per input under `folder`, at the input's path relative to the inputs'
    common folder (class folders kept), so that two inputs never share an output."""
    resolved = [path.resolve() for path in files]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else folder
    return [folder / p.relative_to(common).with_name(p.stem + suffix) for p in resolved]


def config_option(group: str, name: str) -> Any:
    """An option of a config group (`conf/<group>/<name>.yaml`) instantiated: what a tool's
    `tta=flip` means is what a run's means. A name without a file lists the options."""
    from importlib import resources

    from hydra.utils import instantiate

    folder = resources.files("cnn_study.conf") / group
    options = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                     if p.name.endswith(".yaml"))  # fmt: skip
    if name not in options:
        raise CnnStudyError(f"{group}={name!r}; choose one of {options}")
    node = OmegaConf.create((folder / f"{name}.yaml").read_text())
    if group in node:  # a `_global_` option (`tta: null`) sets its group's key
        node = node[group]
    return instantiate(node) if node else None
