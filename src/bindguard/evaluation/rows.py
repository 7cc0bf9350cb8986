"""Typed result rows: one dataclass per kind of row, each turning into exactly the dict ``results.json`` holds.

The JSON keys stay what they have always been (``recall@1``, ``instance_recall@1``); fields use
Python names (``recall_at_1``). A key a row class does not know (from a newer or older version)
is kept in ``extra`` and written back unchanged, so reading and writing a file never loses data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

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


def row_from_dict(row: dict[str, Any]) -> AnyRow:
    """The typed row for a results-file row, chosen by its task and attack."""
    task = row.get("task")
    if task == "calibration":
        return CalibrationRow.from_dict(row)
    if task == "retrieval":
        return RetrievalRow.from_dict(row)
    if row.get("attack", "none") == "none":
        return ZeroShotRow.from_dict(row)
    return RobustRow.from_dict(row)
