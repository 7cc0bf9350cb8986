"""The kinds of rows a results file holds, checked once, and how their numbers are written."""

from __future__ import annotations

from collections.abc import Iterable

from bindguard.errors import DataError

# Fields without which a row of that kind cannot be shown; everything else is read with .get().
_REQUIRED = {
    "clean": ("modality", "n", "top1", "top5"),
    "retrieval": ("modality", "query", "gallery", "recall@1"),
    "robust": ("modality", "attack", "norm", "eps", "eps_abs", "n", "clean_top1", "top1", "top1_ci95"),
    "calibration": ("modality", "method", "norm", "eps", "before", "after"),
    "caption": ("modality", "query", "gallery", "recall@1"),
}
_REQUIRED_NESTED = {"before": ("clean_top1", "robust_top1"), "after": ("clean_top1", "robust_top1")}


def kind(row: dict) -> str | None:
    """``clean``, ``retrieval``, ``robust``, ``calibration``, ``caption``, or None for rows the tables do not show."""
    task, attack = row.get("task"), row.get("attack", "none")
    if task == "calibration":
        return "calibration"
    if task == "caption-retrieval":
        return None if row.get("calibration") else "caption"
    if task == "zero-shot" and row.get("calibration"):
        return None  # the calibrated model's own robust rows: the calibration table summarises them
    if task == "zero-shot":
        return "clean" if attack == "none" else "robust"
    if task == "retrieval" and attack == "none":
        return "retrieval"
    return None


def check_rows(rows: object, source: str) -> list[dict]:
    """Return the rows, or raise DataError naming the first row that lacks a field its kind needs."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DataError(f"{source}: 'rows' must be a list of objects; fix: run the evaluation again")
    for index, row in enumerate(rows):
        row_kind = kind(row)
        if row_kind is None:
            continue
        missing = [field for field in _REQUIRED[row_kind] if field not in row]
        if row_kind == "calibration":
            missing += [
                f"{part}.{field}"
                for part, fields in _REQUIRED_NESTED.items()
                if isinstance(row.get(part), dict)
                for field in fields
                if field not in row[part]
            ]
        if missing:
            raise DataError(
                f"{source}: row {index} ({row_kind}, {row.get('modality', '?')}) lacks {', '.join(missing)}; "
                "fix: run the evaluation again with this bindguard version"
            )
    return rows


def of_kind(rows: Iterable[dict], wanted: str) -> list[dict]:
    return [row for row in rows if kind(row) == wanted]


def modalities(rows: Iterable[dict]) -> list[str]:
    """Modalities in the order they first appear (the order the run evaluated them)."""
    return list(dict.fromkeys(row["modality"] for row in rows))


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def interval(bounds: list[float] | tuple[float, float] | None) -> str:
    if not bounds:
        return "–"
    low, high = bounds
    return f"{percent(low)}–{percent(high)}"


def format_eps(eps: float, norm: str = "linf") -> str:
    """Linf budgets as k/255, the way papers state them; other norms as plain numbers."""
    if eps == 0:
        return "0"
    steps = eps * 255
    if norm == "linf" and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{eps:.4g}"


def stage_labels(stages: Iterable[str]) -> list[str]:
    """``after apgd-ce``, ``+ apgd-t``...: each stage's curve is the worst case over it and all before it."""
    return [("after " if index == 0 else "+ ") + name for index, name in enumerate(stages)]


def slug(*parts: object) -> str:
    """A file-name-safe name built from a row's settings, e.g. ``linf-standard``."""
    text = "-".join(str(part) for part in parts if part not in (None, ""))
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(piece for piece in cleaned.split("-") if piece)
