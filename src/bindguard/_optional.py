"""One door for optional backends: import them lazily and say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from bindguard.errors import MissingDependencyError


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise an error naming the ``pip install`` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f'{module!r} is not installed (needed here); fix: pip install "bindguard[{extra}]"'
        ) from error
