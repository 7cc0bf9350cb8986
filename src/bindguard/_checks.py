"""Checks of option values where they enter: one-line errors that name the option and what it takes.

Every public entry point (the pipeline's functions, recipe and config dataclasses) runs these
before any slow work, so a bad value fails in a second, never after an evaluation, and a
non-finite number never reaches training or an attack.
"""

from __future__ import annotations

import math

from bindguard.errors import ConfigError

#: Seeds are 32-bit: every derived seed (seed * a prime + step) stays well inside torch's 64-bit range.
MAX_SEED = 2**32 - 1


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_seed(seed: object) -> int:
    """A seed in ``0..MAX_SEED``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def check_count(name: str, value: object, least: int, *, optional: bool = False) -> None:
    """An integer option (``--n``, ``--steps``...) of at least ``least``; None passes when ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{option_name(name)} must be an integer >= {least}, got {value!r}")


def check_number(name: str, value: object, *, least: float = 0.0, inclusive: bool = True) -> float:
    """A finite real option at least (or above) ``least``: NaN and infinities are refused, never trained with."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{option_name(name)} must be a finite number, got {value!r}")
    if value < least or (value == least and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{option_name(name)} must be {relation} {least:g}, got {value!r}")
    return float(value)
