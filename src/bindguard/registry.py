"""Name -> factory registries: one front door per kind of object, listing works with nothing installed."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bindguard.errors import ConfigError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered factory: a callable, or a ``"module:attribute"`` string imported on first use."""

    name: str
    target: Callable[..., Any] | str
    description: str = ""
    extra: str | None = None  # the pip extra its backend needs, if any

    def load(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@dataclass
class Registry(Generic[T]):
    """A named collection of factories, e.g. encoders or data sets."""

    kind: str
    list_command: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def register(
        self, name: str, target: Callable[..., T] | str, *, description: str = "", extra: str | None = None
    ) -> None:
        self.entries[name] = Entry(name, target, description, extra)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(name for name in self.entries if fnmatch.fnmatch(name, pattern))

    def get(self, name: str) -> Entry:
        """Look a name up, or raise an error that suggests the closest known name."""
        if not isinstance(name, str):
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"a {self.kind} is named by text, got {name!r}; known: {known} ({self.list_command})")
        if name in self.entries:
            return self.entries[name]
        close = difflib.get_close_matches(name, list(self.entries), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(self.names()) or "none"
        raise UnknownNameError(f"unknown {self.kind} {name!r}; {hint}known: {known} ({self.list_command})")

    def create(self, name: str, /, **options: Any) -> T:
        """Build ``name`` with ``options``; an option its factory does not take is refused by name."""
        factory = self.get(name).load()
        try:
            inspect.signature(factory).bind(**options)
        except TypeError:
            accepted = ", ".join(inspect.signature(factory).parameters) or "none"
            unknown = ", ".join(sorted(set(options) - set(inspect.signature(factory).parameters))) or "?"
            raise ConfigError(f"{self.kind} {name!r} takes no option {unknown}; it takes: {accepted}") from None
        return factory(**options)
