"""What a results file records of how it was made: command line, seeds, versions, content fingerprints.

With it a reader can tell whether two results files measured the same thing, and rerun one.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import torch

from bindguard._openmp import wait_policy
from bindguard.data import Benchmark
from bindguard.data.rows import fingerprint_rows
from bindguard.encoders import Encoder

#: Packages whose versions change numbers; each is recorded when installed.
RECORDED_PACKAGES = ("bindguard", "torch", "numpy", "safetensors", "transformers", "tokenizers")


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide results, and Python's."""
    found = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def state_versions() -> dict[str, str]:
    """The versions that key resumable state: another bindguard or torch never resumes a run."""
    installed = versions()
    return {name: installed[name] for name in ("bindguard", "torch") if name in installed}


def data_fingerprints(benchmark: Benchmark, *, batch_size: int = 256) -> dict[str, str]:
    """``{modality: fingerprint}`` of the samples and labels evaluated (what they are, not where they came from)."""
    return {
        modality.value: fingerprint_rows(item.inputs, item.labels, batch_size=batch_size)
        for modality, item in benchmark.data.items()
    }


def file_sha256(path: str | Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(
    *,
    model: Encoder,
    data: str,
    fingerprints: dict[str, str],
    seed: int,
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
) -> dict:
    """The provenance block of a results file."""
    return {
        "command": shlex.join(sys.argv),
        "seed": seed,
        "versions": versions(),
        # how fast the CPU ran, for anyone comparing wall times across results files
        "threads": {"torch": torch.get_num_threads(), "omp_wait_policy": wait_policy()},
        "model_identity": model.identity,
        "weights": {"path": str(weights) if weights else "shipped", "sha256": file_sha256(weights)},
        "calibration": None
        if calibration is None
        else {"path": str(calibration), "config_sha256": file_sha256(Path(calibration) / "config.json")},
        "data": {"name": data, "fingerprints": fingerprints},
    }
