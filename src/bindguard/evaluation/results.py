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
from bindguard.evaluation.rows import AnyRow, CalibrationRow, RetrievalRow, RobustRow, ZeroShotRow, row_from_dict

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


def make_results(*, model: str, data: str, seed: int, rows: list[dict], settings: dict[str, Any] | None = None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "data": data,
        "seed": seed,
        "versions": package_versions(),
        "settings": settings or {},
        "rows": rows,
    }


def write_results(directory: Path, results: dict) -> Path:
    path = Path(directory) / "results.json"
    atomic_write_json(path, results)
    return path


def read_results(path: Path) -> dict:
    """Read a results file (or the ``results.json`` in a folder), checking its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DataError(f"no results file at {path}; fix: run bindguard eval --out {path.parent}") from error
    except (OSError, ValueError) as error:
        raise DataError(
            f"results file {path} is unreadable or corrupt ({error}); fix: run the evaluation again"
        ) from error
    if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION or "rows" not in results:
        raise DataError(f"{path} is not a bindguard results file of schema {SCHEMA_VERSION}")
    return results


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
    """

    model: str
    data: str
    seed: int
    rows: list[AnyRow]
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "model": self.model,
            "data": self.data,
            "seed": self.seed,
            "versions": self.versions,
            "settings": self.settings,
            "rows": [row.to_dict() for row in self.rows],
        } | self.extra

    @classmethod
    def from_dict(cls, results: dict[str, Any]) -> Results:
        known = {"schema_version", "created", "model", "data", "seed", "versions", "settings", "rows"}
        return cls(
            model=results["model"],
            data=results["data"],
            seed=results["seed"],
            rows=[row_from_dict(row) for row in results["rows"]],
            settings=results.get("settings") or {},
            created=results.get("created", ""),
            versions=results.get("versions") or {},
            extra={key: value for key, value in results.items() if key not in known},
        )

    @classmethod
    def new(cls, *, model: str, data: str, seed: int, rows: list[dict], settings: dict[str, Any]) -> Results:
        """Results of a run made now, from the evaluation functions' row dicts."""
        return cls.from_dict(make_results(model=model, data=data, seed=seed, rows=rows, settings=settings))

    @classmethod
    def read(cls, path: Path) -> Results:
        return cls.from_dict(read_results(path))

    def write(self, directory: Path) -> Path:
        return write_results(directory, self.to_dict())
