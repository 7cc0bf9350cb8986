"""Data sets that yield raw-domain batches, by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.registry import Registry

DATASETS: Registry[Benchmark] = Registry("data set", "bindguard data list")
DATASETS.register(
    "builtin",
    "bindguard.data.builtin.benchmark:load_builtin",
    description="ten digits in image, video, audio, point, depth, thermal (scikit-learn glyphs, espeak-ng voices)",
)


def load_dataset(name: str | os.PathLike, /, **options: Any) -> Benchmark:
    """Load a registered data set by name (``load_dataset("builtin", split="test")``) or a user file.

    Options go to the data set's loader: for ``"builtin"`` see ``load_builtin``, including
    ``shapes`` and ``sample_rate`` to render at an encoder's input sizes
    (``load_dataset("builtin", shapes={Modality.IMAGE: (3, 224, 224)}, sample_rate=48_000)``).
    A name ending in ``.safetensors`` is read as a user data file (see ``data.tensor_file``); its
    tensors have the sizes they were saved with, so ``shapes`` and ``sample_rate`` are ignored.
    """
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if name.endswith(".safetensors"):
        from bindguard.data.tensor_file import load_tensor_file

        options.pop("split", None)
        return load_tensor_file(Path(name), **options)
    return DATASETS.create(name, **options)


__all__ = ["DATASETS", "Benchmark", "ModalityData", "load_dataset"]
