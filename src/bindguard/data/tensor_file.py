"""User data as one safetensors file: raw inputs per modality, integer labels, class names.

Layout: a tensor ``<modality>`` (B, ...) in the encoder's raw layout and domain, and a tensor
``<modality>.labels`` (B,) of class indices, for each modality; metadata ``class_names`` (a JSON
list) and optionally ``templates`` (a JSON object: modality -> list of "... {} ..." prompts).
Inputs are checked against the encoder's spec when they are encoded, and read batch by batch
(``data.rows.FileRows``): a file larger than memory can be evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.data.rows import FileRows, first_rows
from bindguard.errors import ConfigError, DataError

DEFAULT_TEMPLATES = ("a {}.", "a photo of a {}.", "an example of {}.")
FORMAT_HINT = "see 'User data' in the README for the expected layout"


def _metadata_list(path: Path, metadata: dict, key: str) -> list:
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise DataError(f"{path}: metadata has no {key!r}; {FORMAT_HINT}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: metadata {key!r} is not valid JSON ({error}); {FORMAT_HINT}") from None
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise DataError(f"{path}: metadata {key!r} must be a non-empty JSON list of strings")
    return value


def load_tensor_file(
    path: Path,
    *,
    modalities: list[Modality] | tuple[Modality, ...] = PERCEPTUAL_MODALITIES,
    limit: int | None = None,
    shapes: object = None,
    sample_rate: object = None,
    **_: object,
) -> Benchmark:
    """Load a user data file into a ``Benchmark`` with one split (``"test"``).

    ``shapes`` and ``sample_rate`` (the built-in benchmark's rendering sizes) are accepted and
    ignored: a file's tensors already have their sizes, and the encoder's spec checks them.

    Raises:
        DataError: for a missing, corrupt or malformed file, labels that do not match the inputs,
            or a selection with no data.
        ConfigError: for a non-positive limit.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if not path.is_file():
        raise DataError(
            f"data file {path} not found; give a .safetensors file or a data set name (bindguard data list)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())  # noqa: SIM118 (safe_open is not iterable)
            # labels are small and read now; inputs stay in the file until a batch asks for them
            labels_of = {key: handle.get_tensor(key) for key in keys if key.endswith(".labels")}
        inputs_of = {key: FileRows(path, key) for key in keys if "." not in key}
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"data file {path} is corrupt or not safetensors ({error})") from None
    class_names = tuple(_metadata_list(path, metadata, "class_names"))
    templates_json = json.loads(metadata.get("templates", "{}")) if "templates" in metadata else {}
    data: dict[Modality, ModalityData] = {}
    for modality in modalities:
        if modality.value not in inputs_of:
            continue
        inputs, labels = inputs_of[modality.value], labels_of.get(f"{modality.value}.labels")
        if labels is None:
            raise DataError(f"{path}: {modality.value!r} has no '{modality.value}.labels' tensor")
        if labels.dim() != 1 or labels.shape[0] != inputs.shape[0] or labels.is_floating_point():
            raise DataError(
                f"{path}: '{modality.value}.labels' must be (B,) integers with B = {inputs.shape[0]}, got {tuple(labels.shape)} {labels.dtype}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(f"{path}: '{modality.value}.labels' must lie in 0..{len(class_names) - 1}")
        if limit is not None:
            inputs, labels = first_rows(inputs, limit), labels[:limit]
        if len(inputs) == 0:
            raise DataError(f"{path}: {modality.value!r} holds no samples")
        ids = torch.arange(inputs.shape[0])
        data[modality] = ModalityData(inputs, labels.long(), ids, "file")
    if not data:
        found = ", ".join(sorted(inputs_of)) or "none"
        wanted = ", ".join(m.value for m in modalities)
        raise DataError(f"{path} holds no data for the chosen modalities ({wanted}); it has: {found}")
    templates = {m: tuple(templates_json.get(m.value, DEFAULT_TEMPLATES)) for m in data}
    return Benchmark(path.stem, "test", class_names, templates, data)
