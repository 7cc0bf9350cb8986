"""Error classes. Every message says what was wrong, what was given, and how to fix it."""

from __future__ import annotations


class BindguardError(Exception):
    """Base class of every error bindguard raises on bad input; the CLI prints it as one line."""


class UnknownNameError(BindguardError, KeyError):
    """A name (model, data set, modality, attack...) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidInputError(BindguardError, ValueError):
    """A tensor or value of the wrong shape, dtype or domain, or non-finite."""


class DataError(BindguardError, ValueError):
    """A data set or file that is missing, corrupt or empty."""


class ConfigError(BindguardError, ValueError):
    """An option or configuration value that is not allowed."""


class MissingDependencyError(BindguardError, ImportError):
    """An optional backend that is not installed."""


class DivergedError(BindguardError, ArithmeticError):
    """Training whose loss or weights went non-finite; the last good checkpoint is kept."""
