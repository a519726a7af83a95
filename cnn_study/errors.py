"""Errors a user can fix: printed as one clear message, never as a traceback."""


class CnnStudyError(Exception):
    """A problem with the user's input (config, data, paths), not a bug in cnn_study."""


class DataNotFoundError(CnnStudyError):
    """No usable dataset under the configured root, and it could not be downloaded."""


class DivergedError(CnnStudyError):
    """The training loss became NaN or infinite: the run stops, its status is "diverged"."""


NONDETERMINISTIC = "does not have a deterministic implementation"


def user_error(error: BaseException) -> CnnStudyError | None:
    """The CnnStudyError behind `error`, also when Hydra's instantiate wrapped it, or the
    user-fixable problem a library error stands for."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, CnnStudyError):
            return current
        if isinstance(current, RuntimeError) and NONDETERMINISTIC in str(current):
            operation = str(current).split(NONDETERMINISTIC)[0].strip()
            return CnnStudyError(
                f"trainer.deterministic=true, but {operation} has no deterministic CUDA "
                "implementation (adaptive pooling layers, e.g. in gap4 and the pretrained "
                "backbones); use trainer.deterministic=warn (deterministic where possible) "
                "or false"
            )
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
