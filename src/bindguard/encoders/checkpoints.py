"""Reading upstream checkpoints as plain state dicts, checking their keys, and converting them to safetensors.

Upstream weights come as ``.safetensors``, as ``torch.save`` files (``.pth``, ``.pt``, ``.bin``) or as
folders holding one of them. ``torch.save`` files are read with ``weights_only=True`` (memory-mapped
where the format allows); a plain ``pickle.dump`` of tensors goes through bindguard's restricted
unpickler. Anything that needs more than tensors to load (a pickled module, optimizer, TorchScript)
is refused with the name of what it asked for: convert it where the upstream code is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from bindguard._io import atomic_write_bytes
from bindguard._unpickle import RefusedPickleError, UnpicklingError, load_tensor_pickle, refused_global
from bindguard.encoders.base import non_finite_tensor
from bindguard.errors import DataError

#: File endings read as ``torch.save`` output; ``.safetensors`` is read directly.
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
#: Keys under which training scripts nest the state dict, tried in this order.
NESTED_KEYS = ("state_dict", "model", "module")
#: The prefix UniBind and Point-Bind put on ImageBind's keys (the backbone wraps imagebind_huge as ``.bind``).
UNIBIND_PREFIX = "backbone.bind."
DDP_PREFIX = "module."

_CONVERT_HINT = "convert it with the upstream code to a plain state dict or safetensors"


def read_state_dict(path: str | Path, *, strip_prefixes: Iterable[str] = (UNIBIND_PREFIX,)) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file or folder, keyed as a module's ``state_dict`` would be.

    Args:
        path: a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file, or a folder holding either a shard
            index (``*.index.json``, Hugging Face layout) or one weights file (a ``.safetensors`` one is
            preferred over a ``torch.save`` one).
        strip_prefixes: removed from the front of every key that starts with them, after a ``module.``
            prefix that every key carries (DistributedDataParallel) is removed.

    Returns:
        ``{name: tensor}`` on the CPU; ``torch.save`` files in the zip format stay memory-mapped.

    Raises:
        DataError: a missing or unreadable file, a folder without exactly one weights file or a complete
            set of shards, a pickle
            that needs more than tensors, a non-tensor entry, or two keys that become one after stripping.
    """
    path = Path(path)
    if path.is_dir():
        index = _shard_index_in(path)
        tensors = _read_shards(index) if index else _read_file(_weights_file_in(path))
        return _strip(tensors, tuple(strip_prefixes), path)
    if not path.is_file():
        raise DataError(f"no such checkpoint: {path}")
    return _strip(_read_file(path), tuple(strip_prefixes), path)


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            loaded: object = load_file(str(path))
        except SafetensorError as error:
            raise DataError(f"{path} is not a readable safetensors file ({error})") from None
    elif path.suffix in TORCH_SUFFIXES:
        loaded = _load_torch_file(path)
    else:
        raise DataError(f"{path}: unknown checkpoint format {path.suffix!r}; allowed: {', '.join(WEIGHT_SUFFIXES)}")
    return _tensors_of(_unwrap(loaded), path)


def _shard_index_in(folder: Path) -> Path | None:
    """A sharded checkpoint's index (``model.safetensors.index.json``, preferred, or ``*.bin.index.json``)."""
    indexes = sorted(folder.glob("*.index.json"), key=lambda index: (".safetensors." not in index.name, index.name))
    return indexes[0] if indexes else None


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{index} is not a shard index with a weight_map ({error!r})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise DataError(f"{index} names shard {shard!r}; shards must be files beside the index")
        if not (index.parent / shard).is_file():
            raise DataError(f"{index} names shard {shard!r}, which is missing")
        part = _read_file(index.parent / shard)
        repeated = next((key for key in part if key in tensors), None)
        if repeated is not None:
            raise DataError(f"{index}: key {repeated!r} is in more than one shard")
        tensors |= part
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise DataError(f"{index}: {len(missing)} keys of the weight_map are in no shard (first {missing[0]!r})")
    return tensors


def _weights_file_in(folder: Path) -> Path:
    candidates = sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix in WEIGHT_SUFFIXES and not entry.name.startswith(".")
    )
    preferred = [entry for entry in candidates if entry.suffix == ".safetensors"] or candidates
    if len(preferred) == 1:
        return preferred[0]
    if not preferred:
        raise DataError(f"{folder} holds no weights file; expected one of {', '.join(WEIGHT_SUFFIXES)}")
    names = ", ".join(entry.name for entry in preferred[:4]) + (", ..." if len(preferred) > 4 else "")
    raise DataError(f"{folder} holds {len(preferred)} weights files ({names}); pass the one to read")


def _load_torch_file(path: Path) -> object:
    try:
        return torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except UnpicklingError as error:
        raise _needs_more(path, refused_global(error)) from None
    except RuntimeError as error:
        if "TorchScript" in str(error):
            raise _needs_more(path, "TorchScript code (a torch.jit.save archive)") from None
        if "mmap" not in str(error):
            raise DataError(f"{path} is not a readable checkpoint ({' '.join(str(error).split())})") from None
    except (EOFError, ValueError, KeyError, AttributeError) as error:
        raise DataError(f"{path} is not a readable checkpoint ({' '.join(str(error).split())})") from None
    # not a zip archive, so no mmap: a legacy torch.save file (weights-only reader) or a plain pickle.dump
    try:
        return load_tensor_pickle(path)
    except RefusedPickleError as error:
        raise _needs_more(path, error.asked) from None


def _needs_more(path: Path, asked: str) -> DataError:
    return DataError(f"{path} needs more than tensors (it asks for {asked}); {_CONVERT_HINT}")


def _unwrap(loaded: object) -> object:
    """``{"state_dict": {...}, "epoch": 3}`` -> the inner dict, as often as it is nested."""
    for _ in range(len(NESTED_KEYS) + 1):
        if not isinstance(loaded, Mapping) or all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return loaded
        nested = next((loaded[key] for key in NESTED_KEYS if isinstance(loaded.get(key), Mapping)), None)
        if nested is None:
            return loaded
        loaded = nested
    return loaded


def _tensors_of(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise DataError(f"{path} holds a {type(loaded).__name__}, not a state dict of named tensors; {_CONVERT_HINT}")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a named tensor "
                f"(top-level keys: {', '.join(map(repr, list(loaded)[:5]))}); {_CONVERT_HINT}"
            )
    if not loaded:
        raise DataError(f"{path} holds no tensors")
    return dict(loaded)


def _strip(tensors: dict[str, torch.Tensor], prefixes: tuple[str, ...], path: Path) -> dict[str, torch.Tensor]:
    if all(key.startswith(DDP_PREFIX) for key in tensors):
        tensors = {key[len(DDP_PREFIX) :]: value for key, value in tensors.items()}
    stripped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        prefix = next((prefix for prefix in prefixes if prefix and key.startswith(prefix)), "")
        name = key[len(prefix) :]
        if name in stripped:
            raise DataError(
                f"{path}: keys {origin[name]!r} and {key!r} both become {name!r} after stripping "
                f"{', '.join(map(repr, prefixes))}; pass other prefixes to strip"
            )
        stripped[name], origin[name] = value, key
    return stripped


def check_keys(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a partial or mismatched load: every expected key present, none extra, every shape equal.

    Args:
        expected: the module's ``state_dict()`` (or any name -> tensor of the right shape).
        found: what the checkpoint holds (after ``read_state_dict``'s prefix stripping).
        source: where ``found`` came from, for the message (a path).

    Raises:
        DataError: naming how many keys are missing, unexpected and of the wrong shape, the first of
            each, and the prefix to strip when the unexpected keys are the missing ones under a prefix.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(key for key in set(expected) & set(found) if tuple(expected[key].shape) != tuple(found[key].shape))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
    if wrong:
        key = wrong[0]
        parts.append(
            f"{len(wrong)} with the wrong shape (first {key!r}: {tuple(found[key].shape)} in the file, "
            f"{tuple(expected[key].shape)} expected)"
        )
    prefix = _shared_prefix(missing, unexpected)
    fix = f"strip the prefix {prefix!r}" if prefix else "check that the checkpoint is for this model and size"
    raise DataError(f"{source} does not fit the model, keys: {', '.join(parts)}; fix: {fix}")


def _shared_prefix(missing: list[str], unexpected: list[str]) -> str | None:
    """The prefix that turns the first missing key into an unexpected one, if there is one."""
    if not missing:
        return None
    return next((key[: -len(missing[0])] for key in unexpected if key.endswith("." + missing[0])), None)


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What ``convert_to_safetensors`` wrote."""

    path: Path
    tensors: int
    parameters: int


def convert_to_safetensors(
    path: str | Path, out: str | Path, *, strip_prefixes: Iterable[str] = (UNIBIND_PREFIX,)
) -> ConvertedCheckpoint:
    """Convert a checkpoint (file or folder) to one ``.safetensors`` file, written atomically.

    Args:
        path: what ``read_state_dict`` reads.
        out: the ``.safetensors`` file to write (replaced if it exists; never half-written).
        strip_prefixes: as for ``read_state_dict``.

    Returns:
        The file written, with its tensor and element counts.

    Raises:
        DataError: what ``read_state_dict`` raises, a non-finite tensor, or ``out`` not a ``.safetensors``
            path or the source itself.
    """
    path, out = Path(path), Path(out)
    if out.suffix != ".safetensors":
        raise DataError(f"the converted file must end in .safetensors, got {out}")
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise DataError(f"{out} is the checkpoint being converted; write the result elsewhere")
    tensors = read_state_dict(path, strip_prefixes=strip_prefixes)
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise DataError(f"{path}: tensor {bad!r} holds NaN or infinite values; refusing to convert broken weights")
    metadata = {"format": "pt", "source": path.name, "stripped_prefixes": json.dumps(list(strip_prefixes))}
    atomic_write_bytes(out, save(_standalone(tensors), metadata=metadata))
    return ConvertedCheckpoint(out, len(tensors), sum(tensor.numel() for tensor in tensors.values()))


def _standalone(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no memory (safetensors refuses tied weights and views)."""
    seen: set[int] = set()
    result = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage().data_ptr()
        shared = storage in seen and tensor.numel() > 0
        seen.add(storage)
        result[name] = tensor.clone(memory_format=torch.contiguous_format) if shared else tensor.contiguous()
    return result
