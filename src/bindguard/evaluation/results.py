"""The results file: ``results.json``, schema-versioned, written atomically."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bindguard._io import atomic_write_json
from bindguard.errors import DataError

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
