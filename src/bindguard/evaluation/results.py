"""The results file: ``results.json``, schema-versioned, written atomically."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bindguard._io import atomic_write_json
from bindguard.errors import DataError
from bindguard.evaluation.rows import (
    AnyRow,
    CalibrationRow,
    RetrievalRow,
    RobustRow,
    ZeroShotRow,
    check_row,
    row_from_dict,
)

SCHEMA_VERSION = 1


def package_versions() -> dict[str, str]:
    import numpy
    import torch

    import bindguard

    return {
        "bindguard": bindguard.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def make_results(
    *,
    model: str,
    data: str,
    seed: int,
    rows: list[dict],
    settings: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "data": data,
        "seed": seed,
        "versions": package_versions(),
        "settings": settings or {},
        "provenance": provenance or {},
        "rows": rows,
    }


def write_results(directory: Path, results: dict) -> Path:
    path = Path(directory) / "results.json"
    atomic_write_json(path, results)
    return path


def read_results(path: Path, *, typed: bool = False) -> dict:
    """Read a results file (or the ``results.json`` in a folder), checking its schema.

    Args:
        path: the file, or the folder that holds it.
        typed: also require every field the typed rows need (``Results.read``); reports need fewer.

    Raises:
        DataError: for a missing, unreadable or corrupt file, another schema version, or a field
            that does not hold what the schema says; the message names the file, row and field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DataError(f"no results file at {path}; fix: run bindguard eval --out {path.parent}") from error
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise DataError(
            f"results file {path} is unreadable or corrupt ({reason}); fix: run the evaluation again"
        ) from error
    check_results(results, str(path), typed=typed)
    return results


# Top-level keys: (test, what it must be); "rows" and "schema_version" are checked apart.
_TOP_LEVEL = {
    "model": (lambda value: isinstance(value, str), "a string"),
    "data": (lambda value: isinstance(value, str), "a string"),
    "seed": (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
    "created": (lambda value: isinstance(value, str), "a string"),
    "versions": (lambda value: isinstance(value, dict), "an object"),
    "settings": (lambda value: value is None or isinstance(value, dict), "an object"),
    "provenance": (lambda value: value is None or isinstance(value, dict), "an object"),
}


def check_results(results: object, source: str, *, typed: bool = False) -> None:
    """Check a parsed results file: schema version, top-level fields and every row (``rows.check_row``).

    Raises:
        DataError: naming ``source`` and, for a row, its index and field.
    """
    if not isinstance(results, dict):
        raise DataError(
            f"{source} is not a bindguard results file (a JSON object with schema_version {SCHEMA_VERSION} "
            f"and rows), got a JSON {type(results).__name__}; fix: run the evaluation again"
        )
    version = results.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        got = "no schema_version" if "schema_version" not in results else f"schema_version {version!r}"
        raise DataError(
            f"{source} is not a bindguard results file of schema {SCHEMA_VERSION} ({got}); "
            "fix: rerun the evaluation with this bindguard, or read it with the version that wrote it"
        )
    needed = ("model", "data", "seed", "rows") if typed else ("rows",)
    for key in needed:
        if key not in results:
            raise DataError(f"{source} lacks the top-level field {key!r}; fix: run the evaluation again")
    for key, (test, wanted) in _TOP_LEVEL.items():
        if key in results and not test(results[key]):
            raise DataError(
                f"{source}: top-level field {key!r} must be {wanted}, got {results[key]!r:.40}; "
                "fix: run the evaluation again, or correct the file"
            )
    if not isinstance(results["rows"], list):
        raise DataError(f"{source}: 'rows' must be a JSON list of row objects; fix: run the evaluation again")
    for index, row in enumerate(results["rows"]):
        check_row(row, index, source, typed=typed)


@dataclass
class Results:
    """What a run measured: typed rows plus the run's identity and settings.

    ``to_dict()`` is the schema-versioned ``results.json`` content; ``write(directory)`` writes it
    atomically; ``Results.read(path)`` reads any file of this schema back.

    Attributes:
        model: the encoder's registry name.
        data: the data set's name or file.
        seed: the run's seed.
        rows: clean, retrieval, robust and calibration rows, in the order they were measured.
        settings: how the run was made (attacks, budgets, steps, samples, weights, calibration...).
        created, versions: when and with which packages.
        provenance: what the run was made from, to tell two runs apart and rerun one (command line,
            fingerprints of the weights and data...); empty in files written before it was recorded.
    """

    model: str
    data: str
    seed: int
    rows: list[AnyRow]
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys of other versions, kept as they are

    @property
    def clean(self) -> list[ZeroShotRow]:
        return [row for row in self.rows if isinstance(row, ZeroShotRow)]

    @property
    def retrieval(self) -> list[RetrievalRow]:
        return [row for row in self.rows if isinstance(row, RetrievalRow)]

    @property
    def robust(self) -> list[RobustRow]:
        return [row for row in self.rows if isinstance(row, RobustRow)]

    @property
    def calibration(self) -> list[CalibrationRow]:
        return [row for row in self.rows if isinstance(row, CalibrationRow)]

    def __repr__(self) -> str:
        # A run holds hundreds of rows and their settings; printing them all buries the answer.
        kinds = {
            "clean": self.clean,
            "retrieval": self.retrieval,
            "robust": self.robust,
            "calibration": self.calibration,
        }
        counts = ", ".join(f"{len(rows)} {kind}" for kind, rows in kinds.items() if rows)
        return f"Results(model={self.model!r}, data={self.data!r}, seed={self.seed}, rows=[{counts or 'none'}])"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "model": self.model,
            "data": self.data,
            "seed": self.seed,
            "versions": self.versions,
            "settings": self.settings,
            "provenance": self.provenance,
            "rows": [row.to_dict() for row in self.rows],
        } | self.extra

    @classmethod
    def from_dict(cls, results: dict[str, Any]) -> Results:
        known = {"schema_version", "created", "model", "data", "seed", "versions", "settings", "provenance", "rows"}
        return cls(
            model=results["model"],
            data=results["data"],
            seed=results["seed"],
            rows=[row_from_dict(row) for row in results["rows"]],
            settings=results.get("settings") or {},
            created=results.get("created", ""),
            versions=results.get("versions") or {},
            provenance=results.get("provenance") or {},
            extra={key: value for key, value in results.items() if key not in known},
        )

    @classmethod
    def new(
        cls,
        *,
        model: str,
        data: str,
        seed: int,
        rows: list[dict],
        settings: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ) -> Results:
        """Results of a run made now, from the evaluation functions' row dicts."""
        return cls.from_dict(
            make_results(model=model, data=data, seed=seed, rows=rows, settings=settings, provenance=provenance)
        )

    @classmethod
    def read(cls, path: Path) -> Results:
        """Read a results file (or the one in a folder), checking the schema and every row.

        Raises:
            DataError: naming the file, and for a bad row its index and field.
        """
        return cls.from_dict(read_results(path, typed=True))

    def write(self, directory: Path) -> Path:
        return write_results(directory, self.to_dict())
