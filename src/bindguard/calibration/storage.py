"""A calibration folder: ``config.json`` (what was trained, for which encoder) + ``model.safetensors``.

Tensors are stored as safetensors only: a pickled checkpoint is refused, never loaded. The
config records the SHA-256 of the tensor file, so a tampered or truncated file is caught before
any tensor is used.

Two files cannot be replaced in one atomic step, so a write goes through a staged tensor file
named by its checksum, and ``config.json`` is the commit point:

1. the new tensors are written (atomically) to ``model-<sha256[:16]>.safetensors``;
2. ``config.json`` is replaced (atomically); from here on the folder holds the new calibration;
3. the staged file is renamed (atomically) onto ``model.safetensors``.

An interruption at any point leaves either the previous calibration or the new one whole. After
the commit point the live tensors are in the staged file named by the config's checksum, until
step 3 is done: the next read or write of the folder finishes it, so the folder ends with the usual
two files. The next write also removes staged files and temp files of writes that never committed.
The other files of the folder (results, resumable state, checkpoints) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from bindguard._io import atomic_write_bytes, atomic_write_json, remove_stale_partials
from bindguard.calibration.module import FORMAT, CalibrationConfig
from bindguard.errors import BindguardError, DataError

CONFIG_FILE = "config.json"
TENSOR_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
STAGED_PATTERN = re.compile(r"model-[0-9a-f]{16}\.safetensors")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def staged_tensor_file(sha256: str) -> str:
    """The name a write stages tensors of checksum ``sha256`` under, before ``config.json`` commits them."""
    return f"model-{sha256[:16]}.safetensors"


def write_calibrations(
    directory: Path,
    *,
    encoder: str,
    embed_dim: int,
    encoder_parameters: int,
    modules: dict[str, torch.nn.Module],
    kept_encoder: str | None = None,
) -> Path:
    """Write (or extend) a calibration folder with per-modality modules ``{modality: Calibration}``.

    Modalities already in the folder are kept unless overwritten here, when the folder was written
    for ``kept_encoder`` (default ``encoder``): the identity of the weights those modalities use,
    which is narrower than ``encoder`` when a new modality's tower comes from a file of its own.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"calibration path {directory} exists and is not a folder; give a folder path")
    configs: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    if (directory / CONFIG_FILE).exists():
        header, old_configs, old_tensors = read_calibrations(directory)
        if header["encoder"] not in (encoder, kept_encoder) or header["embed_dim"] != embed_dim:
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
    staged = directory / staged_tensor_file(config["sha256"])
    atomic_write_bytes(staged, blob)
    atomic_write_json(directory / CONFIG_FILE, config)  # the commit point: the new calibration is live
    _finish_write(staged, directory / TENSOR_FILE)
    for leftover in directory.iterdir():  # staged files of earlier writes that were interrupted before the commit
        if STAGED_PATTERN.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)
    remove_stale_partials(directory, STAGED_PATTERN)  # and their half-written temp files
    return directory


def _finish_write(staged: Path, tensor_path: Path) -> Path:
    """Step 3 of a committed write: rename the staged tensor file onto ``model.safetensors``.

    Returns:
        The file that holds the live tensors: ``tensor_path``, or ``staged`` in a read-only folder.
    """
    try:
        os.replace(staged, tensor_path)
    except FileNotFoundError:
        pass  # another reader or writer of the folder finished it first
    except OSError:
        return staged  # a read-only folder: read the staged file where it is
    return tensor_path


def read_calibrations(directory: Path) -> tuple[dict, dict[str, CalibrationConfig], dict[str, torch.Tensor]]:
    """(header, ``{modality: config}``, tensors) of a calibration folder, after every integrity check.

    Raises:
        DataError: for a missing folder or file, a pickled checkpoint, a corrupt or tampered file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"no calibration folder at {directory}; fix: bindguard calibrate --out {directory}")
    config_path = directory / CONFIG_FILE
    config = _read_config(directory) if config_path.is_file() else None
    tensor_path = directory / TENSOR_FILE
    if config is not None and SHA256_PATTERN.fullmatch(str(config.get("sha256"))):
        staged = directory / staged_tensor_file(config["sha256"])
        if staged.is_file():  # a write was interrupted after its commit point: finish it
            tensor_path = _finish_write(staged, tensor_path)
    if not tensor_path.is_file():
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise DataError(
                f"{directory / pickled[0]} is a pickled checkpoint, which bindguard refuses to load (unpickling runs "
                f"code); fix: save the calibration as {TENSOR_FILE} + {CONFIG_FILE} with bindguard calibrate"
            )
        raise DataError(f"{directory} has no {TENSOR_FILE}; fix: bindguard calibrate --out {directory}")
    if config is None:
        raise DataError(f"{directory} has no {CONFIG_FILE}; fix: bindguard calibrate --out {directory}")
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
    configs = _modality_configs(config_path, config)
    header = {k: config[k] for k in ("encoder", "embed_dim", "encoder_parameters")}
    return header, configs, tensors


def _read_config(directory: Path) -> dict:
    """The parsed ``config.json`` of a calibration folder, checked to be one of ours.

    Raises:
        DataError: for an unreadable, corrupt or foreign file.
    """
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{config_path} is corrupt ({error}); fix: calibrate again") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise DataError(f"{config_path} is not a bindguard calibration (format {found!r}, expected {FORMAT!r})")
    _check_header(config_path, config)
    return config


def _check_header(config_path: Path, config: dict) -> None:
    """The schema of ``config.json`` outside the per-modality configs: each field's presence, type and range."""

    def wrong(field: str, expected: str) -> DataError:
        found = repr(config[field]) if field in config else "nothing"
        return DataError(f"{config_path}: field {field!r} must be {expected}, found {found}; fix: calibrate again")

    if not isinstance(config.get("encoder"), str) or not config["encoder"]:
        raise wrong("encoder", "the encoder's identity such as 'tinybind@…'")
    for field in ("embed_dim", "encoder_parameters"):
        value = config.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise wrong(field, "a positive integer")
    if not isinstance(config.get("sha256"), str) or not SHA256_PATTERN.fullmatch(config["sha256"]):
        raise wrong("sha256", "the SHA-256 of the tensor file (64 hex digits)")
    modalities = config.get("modalities")
    if not isinstance(modalities, dict) or not modalities:
        raise wrong("modalities", "a non-empty object from modality to its calibration")
    for modality, entry in modalities.items():
        if not isinstance(entry, dict):
            raise DataError(
                f"{config_path}: modalities.{modality} must be an object, found {entry!r}; fix: calibrate again"
            )


def _modality_configs(config_path: Path, config: dict) -> dict[str, CalibrationConfig]:
    """``{modality: CalibrationConfig}``, each checked on construction; an error names the file and the modality."""
    configs = {}
    for modality, entry in config["modalities"].items():
        try:
            configs[modality] = CalibrationConfig(**entry)
        except TypeError as error:  # a missing or unknown field
            message = str(error).split("__init__() ", 1)[-1]
            raise DataError(f"{config_path}: modalities.{modality}: {message}; fix: calibrate again") from None
        except BindguardError as error:
            raise DataError(f"{config_path}: modalities.{modality}: {error}; fix: calibrate again") from None
        if modality != configs[modality].modality:
            raise DataError(
                f"{config_path}: modalities.{modality} records modality {configs[modality].modality!r}; "
                "fix: calibrate again"
            )
    return configs
