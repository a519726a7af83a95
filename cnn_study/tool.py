"""The command line of cnn_study's tools (`explain`, `predict`, `export`): key=value
arguments checked against a dataclass, one-line errors with exit code 2, `--help`."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    for line in produced or []:
        print(line)
    return 0
