"""Errors a user can fix: printed as one clear message, never as a traceback."""

import sys
from collections.abc import Iterator


class CnnStudyError(Exception):
    """A problem with the user's input (config, data, paths), not a bug in cnn_study."""


class DataNotFoundError(CnnStudyError):
    """No usable dataset under the configured root, and it could not be downloaded."""


class DivergedError(CnnStudyError):
    """The training loss became NaN or infinite: the run stops, its status is "diverged"."""


NONDETERMINISTIC = "does not have a deterministic implementation"


def chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions behind it (causes and contexts), each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def interruption(error: BaseException) -> str | None:
    """ "SIGINT" or "SIGTERM" when `error` ends a run that was stopped from outside.

    Lightning turns Ctrl-C into SystemExit(1) after its own handling, and SIGTERM (also
    what SLURM sends before it pre-empts a job) into SIGTERMException at the next step."""
    # Lightning is not imported on the paths that fail before training (help, config errors);
    # where it is not, no SIGTERMException can exist.
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")
    sigterm = getattr(exceptions, "SIGTERMException", None)
    for link in chain(error):
        if isinstance(link, KeyboardInterrupt):
            return "SIGINT"
        if sigterm is not None and isinstance(link, sigterm):
            return "SIGTERM"
    return None


def user_error(error: BaseException) -> CnnStudyError | None:
    """The CnnStudyError behind `error`, also when Hydra's instantiate wrapped it, or the
    user-fixable problem a library error stands for."""
    for current in chain(error):
        if isinstance(current, CnnStudyError):
            return current
        if isinstance(current, PermissionError):  # a folder or file the user can fix
            return CnnStudyError(f"{current.filename or 'a file'}: permission denied")
        if isinstance(current, RuntimeError) and NONDETERMINISTIC in str(current):
            operation = str(current).split(NONDETERMINISTIC)[0].strip()
            return CnnStudyError(
                f"trainer.deterministic=true, but {operation} has no deterministic CUDA "
                "implementation (adaptive pooling layers, e.g. in gap4 and the pretrained "
                "backbones); use trainer.deterministic=warn (deterministic where possible) "
                "or false"
            )
    return None
