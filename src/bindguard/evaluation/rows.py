"""Typed result rows: one dataclass per kind of row, each turning into exactly the dict ``results.json`` holds.

The JSON keys stay what they have always been (``recall@1``, ``instance_recall@1``); fields use
Python names (``recall_at_1``). A key a row class does not know (from a newer or older version)
is kept in ``extra`` and written back unchanged, so reading and writing a file never loses data.
A key a row class does know is checked when a file is read (``check_row``): a hand-edited or
damaged value is refused naming the file, the row and the field, never shown as a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from bindguard.errors import DataError

# Python field name -> JSON key, where they differ
_KEYS = {
    "recall_at_1": "recall@1",
    "recall_at_5": "recall@5",
    "recall_at_10": "recall@10",
    "instance_recall_at_1": "instance_recall@1",
}
_FIELDS_OF_KEY = {key: name for name, key in _KEYS.items()}


@dataclass(frozen=True)
class Row:
    """Fields shared by every row; subclasses add theirs. ``to_dict()`` gives the JSON form."""

    modality: str
    task: str
    n: int
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    # fields written only when set (absent from the JSON when None)
    optional: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "extra":
                continue
            value = getattr(self, item.name)
            if value is None and item.name in self.optional:
                continue
            out[_KEYS.get(item.name, item.name)] = list(value) if isinstance(value, tuple) else value
        return out | self.extra

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Row:
        names = {item.name for item in fields(cls)} - {"extra"}
        known = {_FIELDS_OF_KEY.get(key, key): value for key, value in row.items()}
        extra = {key: value for key, value in row.items() if _FIELDS_OF_KEY.get(key, key) not in names}
        return cls(**{name: value for name, value in known.items() if name in names}, extra=extra)


@dataclass(frozen=True)
class ZeroShotRow(Row):
    """Clean zero-shot classification of one modality against the semantic centers."""

    top1: float
    top5: float
    top1_ci95: list[float]
    attack: str = "none"
    eps: float = 0.0


@dataclass(frozen=True)
class RetrievalRow(Row):
    """Clean retrieval: text<->modality at class level, or modality->modality at instance level."""

    query: str
    gallery: str
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    level: str | None = None
    chance_recall1: float | None = None
    attack: str = "none"
    eps: float = 0.0

    optional: ClassVar[tuple[str, ...]] = ("level", "chance_recall1")


@dataclass(frozen=True)
class RobustRow(Row):
    """Zero-shot accuracy under attack: per-sample worst case over an ensemble, with its sanity flags."""

    attack: str
    attacks: list[str]
    norm: str
    eps: float
    eps_abs: float
    steps: int
    square_queries: int
    adaptive: bool
    clean_top1: float
    clean_top5: float
    top1: float
    top5: float
    top1_ci95: list[float]
    recall_at_1: float
    recall_at_5: float
    max_norm: float
    after: dict[str, float]
    square: dict[str, Any]
    flags: list[str]
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] | None = None
    calibration: str | None = None  # set on the calibrated model's own rows

    optional: ClassVar[tuple[str, ...]] = ("checks", "calibration")


@dataclass(frozen=True)
class CalibrationRow(Row):
    """One modality's calibration: clean, transfer and adaptive robust accuracy before and after."""

    method: str
    objective: str
    mode: str
    train_threat: dict[str, Any]
    norm: str
    eps: float
    eps_abs: float
    attack: str
    attacks: list[str]
    steps: int
    square_queries: int
    eot_samples: int
    before: dict[str, float]
    after: dict[str, Any]
    instance_recall_at_1: dict[str, Any] | None
    trainable_parameters: int
    trainable_fraction: float
    train_seconds: float | None
    flags: list[str]


AnyRow = ZeroShotRow | RetrievalRow | RobustRow | CalibrationRow
TASKS = ("zero-shot", "retrieval", "caption-retrieval", "calibration")


def row_class(row: dict[str, Any]) -> type[AnyRow]:
    """The row class for a results-file row, chosen by its task and attack."""
    task = row.get("task")
    if task == "calibration":
        return CalibrationRow
    if task == "retrieval" or (task == "caption-retrieval" and row.get("attack", "none") == "none"):
        return RetrievalRow
    if row.get("attack", "none") == "none":
        return ZeroShotRow
    return RobustRow


def row_from_dict(row: dict[str, Any]) -> AnyRow:
    """The typed row for a results-file row, chosen by its task and attack."""
    return row_class(row).from_dict(row)


def required_keys(cls: type[Row]) -> list[str]:
    """The JSON keys a row of ``cls`` cannot be built without (its fields that have no default)."""
    return [
        _KEYS.get(item.name, item.name)
        for item in fields(cls)
        if item.init and item.default is MISSING and item.default_factory is MISSING
    ]


# What each known key holds: (test, what it must be). A key absent from a row is not checked here.
Check = tuple[Callable[[Any], bool], str]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_interval(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_is_fraction, value)) and value[0] <= value[1]


_TEXT: Check = (lambda value: isinstance(value, str) and bool(value.strip()), "a non-empty string")
_FRACTION: Check = (_is_fraction, "a number in [0, 1]")
_COUNT: Check = (lambda value: _is_integer(value) and value >= 0, "an integer >= 0")
_BUDGET: Check = (lambda value: _is_number(value) and value >= 0, "a finite number >= 0")
_NAMES: Check = (
    lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
    "a list of strings",
)
_OBJECT: Check = (lambda value: isinstance(value, dict), "an object")
_OPTIONAL_OBJECT: Check = (lambda value: value is None or isinstance(value, dict), "an object or null")

FIELD_CHECKS: dict[str, Check] = {
    "modality": _TEXT,
    "task": (lambda value: value in TASKS, "one of " + ", ".join(TASKS)),
    "n": _COUNT,
    "top1": _FRACTION,
    "top5": _FRACTION,
    "clean_top1": _FRACTION,
    "clean_top5": _FRACTION,
    "top1_ci95": (_is_interval, "a pair [low, high] of numbers in [0, 1]"),
    "recall@1": _FRACTION,
    "recall@5": _FRACTION,
    "recall@10": _FRACTION,
    "chance_recall1": _FRACTION,
    "trainable_fraction": _FRACTION,
    "query": _TEXT,
    "gallery": _TEXT,
    "level": _TEXT,
    "attack": _TEXT,
    "attacks": _NAMES,
    "norm": _TEXT,
    "method": _TEXT,
    "objective": _TEXT,
    "mode": _TEXT,
    "eps": _BUDGET,
    "eps_abs": _BUDGET,
    "max_norm": _BUDGET,
    "steps": _COUNT,
    "square_queries": _COUNT,
    "eot_samples": _COUNT,
    "trainable_parameters": _COUNT,
    "train_seconds": (lambda value: value is None or (_is_number(value) and value >= 0), "a number >= 0 or null"),
    "adaptive": (lambda value: isinstance(value, bool), "true or false"),
    "before": _OBJECT,
    "after": _OBJECT,
    "square": _OBJECT,
    "train_threat": _OBJECT,
    "checks": _OPTIONAL_OBJECT,
    "instance_recall@1": _OPTIONAL_OBJECT,
    "flags": _NAMES,
    "notes": _NAMES,
    "calibration": (lambda value: value is None or isinstance(value, str), "a string or null"),
}


# Objects of accuracies: name -> a fraction, a [low, high] interval, or null (a stage that did not run).
ACCURACY_GROUPS = ("before", "after")


def check_row(row: object, index: int, source: str, *, typed: bool = False) -> dict[str, Any]:
    """Return ``row`` if every known field holds what it should, else raise naming the row and field.

    Args:
        row: one entry of a results file's ``rows``.
        index: its position, for the message.
        source: the file, for the message.
        typed: also require every field the row's class needs (what ``Results.read`` builds from).

    Raises:
        DataError: ``<source>: row <index> (<task>, <modality>): field 'top1' must be a number in [0, 1], got 'x'; fix...``
    """
    fix = "fix: run the evaluation again, or correct the file"
    if not isinstance(row, dict):
        raise DataError(f"{source}: row {index} must be a JSON object, got {_shown(row)}; {fix}")
    where = f"{source}: row {index} ({str(row.get('task', '?'))[:20]}, {str(row.get('modality', '?'))[:20]})"
    for key in ("modality", "task", "n"):
        if key not in row:
            raise DataError(f"{where} lacks the field {key!r}; {fix}")
    for key, value in row.items():
        if key in FIELD_CHECKS:
            test, wanted = FIELD_CHECKS[key]
            if not test(value):
                raise DataError(f"{where}: field {key!r} must be {wanted}, got {_shown(value)}; {fix}")
    for key in ACCURACY_GROUPS:
        for name, value in row.get(key, {}).items():
            if not (value is None or _is_fraction(value) or _is_interval(value)):
                raise DataError(
                    f"{where}: field '{key}.{name}' must be a number in [0, 1] (or a [low, high] pair of them), "
                    f"got {_shown(value)}; {fix}"
                )
    if typed:
        missing = [key for key in required_keys(row_class(row)) if key not in row]
        if missing:
            raise DataError(f"{where} lacks the field(s) {', '.join(map(repr, missing))}; {fix}")
    return row


def _shown(value: object, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."
