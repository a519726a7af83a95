"""cnn_study: CNN image-classification studies with PyTorch Lightning and Hydra."""

from collections.abc import Callable
from importlib import import_module
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """A subpackage's public API, `name → module`, as (`__all__`, a module `__getattr__`):
    each name imports its module on first use, so that importing one light piece of a
    subpackage (the study file's checks, the CLI) does not load the heavy ones."""

    def attribute(name: str) -> Any:
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return list(exports), attribute


# Defined above first: the subpackages these imports reach use `lazy_exports`.
from cnn_study.config import register_resolvers  # noqa: E402
from cnn_study.schema import register_schemas  # noqa: E402

register_resolvers()
register_schemas()
