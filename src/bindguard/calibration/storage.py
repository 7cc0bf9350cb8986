"""A calibration folder: ``config.json`` (what was trained, for which encoder) + ``model.safetensors``.

Tensors are stored as safetensors only: a pickled checkpoint is refused, never loaded. The
config records the SHA-256 of the tensor file, so a tampered or truncated file is caught before
any tensor is used. Writes are atomic, tensors first, so an interruption leaves the previous
calibration whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from bindguard._io import atomic_write_bytes, atomic_write_json
from bindguard.calibration.module import FORMAT, CalibrationConfig
from bindguard.errors import DataError

CONFIG_FILE = "config.json"
TENSOR_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def write_calibrations(
    directory: Path, *, encoder: str, embed_dim: int, encoder_parameters: int, modules: dict[str, torch.nn.Module]
) -> Path:
    """Write (or extend) a calibration folder with per-modality modules ``{modality: Calibration}``.

    Modalities already in the folder for the same encoder are kept unless overwritten here.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"calibration path {directory} exists and is not a folder; give a folder path")
    configs: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    if (directory / CONFIG_FILE).exists():
        header, old_configs, old_tensors = read_calibrations(directory)
        if header["encoder"] != encoder or header["embed_dim"] != embed_dim:
            raise DataError(
                f"{directory} holds a calibration of {header['encoder']!r} ({header['embed_dim']}-d), not {encoder!r} "
                f"({embed_dim}-d); fix: choose another --out folder"
            )
        configs |= {m: c.to_json() for m, c in old_configs.items() if m not in modules}
        tensors |= {k: v for k, v in old_tensors.items() if k.split(".", 1)[0] not in modules}
    for modality, module in modules.items():
        configs[modality] = module.config.to_json()
        tensors |= {f"{modality}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    blob = save(tensors, metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "encoder": encoder,
        "embed_dim": embed_dim,
        "encoder_parameters": encoder_parameters,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "modalities": dict(sorted(configs.items())),
    }
    atomic_write_bytes(directory / TENSOR_FILE, blob)
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def read_calibrations(directory: Path) -> tuple[dict, dict[str, CalibrationConfig], dict[str, torch.Tensor]]:
    """(header, ``{modality: config}``, tensors) of a calibration folder, after every integrity check.

    Raises:
        DataError: for a missing folder or file, a pickled checkpoint, a corrupt or tampered file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"no calibration folder at {directory}; fix: bindguard calibrate --out {directory}")
    config_path, tensor_path = directory / CONFIG_FILE, directory / TENSOR_FILE
    if not tensor_path.is_file():
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise DataError(
                f"{directory / pickled[0]} is a pickled checkpoint, which bindguard refuses to load (unpickling runs "
                f"code); fix: save the calibration as {TENSOR_FILE} + {CONFIG_FILE} with bindguard calibrate"
            )
        raise DataError(f"{directory} has no {TENSOR_FILE}; fix: bindguard calibrate --out {directory}")
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as error:
        raise DataError(f"{directory} has no {CONFIG_FILE}; fix: bindguard calibrate --out {directory}") from error
    except (OSError, ValueError) as error:
        raise DataError(f"{config_path} is corrupt ({error}); fix: calibrate again") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise DataError(f"{config_path} is not a bindguard calibration (format {found!r}, expected {FORMAT!r})")
    blob = tensor_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != config.get("sha256"):
        raise DataError(
            f"{tensor_path} does not match the checksum in {CONFIG_FILE}: the file was changed or damaged; "
            "fix: calibrate again"
        )
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError) as error:
        raise DataError(f"{tensor_path} is corrupt ({error}); fix: calibrate again") from error
    try:
        configs = {m: CalibrationConfig(**c) for m, c in config["modalities"].items()}
        header = {k: config[k] for k in ("encoder", "embed_dim", "encoder_parameters")}
    except (KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{config_path} is missing fields ({error}); fix: calibrate again") from error
    return header, configs, tensors
