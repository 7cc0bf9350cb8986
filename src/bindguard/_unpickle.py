"""The package's one restricted unpickler: tensors, dicts, lists and numbers, nothing that runs code.

Some files bindguard must read are plain ``pickle.dump`` output (UniBind's class centres are a pickled
``{label: tensor(K, D)}``). ``torch.load(weights_only=True)`` cannot read them: pickle serialises a
tensor as ``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(b), ...)``, and
``_load_from_bytes`` itself unpickles its bytes with no restriction, so allow-listing it would let
the embedded bytes run anything. Here every global a pickle asks for is looked up in a short table;
``_load_from_bytes`` maps to a wrapper that reads the embedded storage with ``weights_only=True``, and
anything else is refused before it is called.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bindguard.errors import DataError

_HINT = "bindguard only unpickles tensors, dicts, lists and numbers"

#: What ``torch.load(weights_only=True)`` raises for a global it refuses; other modules catch it from here,
#: so that no module but this one imports pickle.
UnpicklingError = pickle.UnpicklingError


class RefusedPickleError(DataError):
    """A pickle that asks for more than tensors; ``asked`` names what it asked for (``posix.system``)."""

    def __init__(self, message: str, *, asked: str) -> None:
        super().__init__(message)
        self.asked = asked


class _Refused(Exception):
    """A global the pickle asked for that the table does not hold (raised inside ``find_class``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _storage_from_bytes(data: bytes) -> torch.UntypedStorage | torch.TypedStorage:
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``: the bytes may only hold a storage."""
    if not isinstance(data, bytes | bytearray):
        raise _Refused(f"torch.storage._load_from_bytes of a {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise _Refused(refused_global(error)) from None
    if not isinstance(storage, torch.UntypedStorage | torch.TypedStorage):
        raise _Refused(f"embedded bytes holding a {type(storage).__name__} where a tensor storage belongs")
    return storage


def _hooks(backward_hooks: object) -> OrderedDict[Any, Any]:
    # a pickled tensor always carries an empty OrderedDict here; hooks are callables, which are refused
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise _Refused("a tensor with backward hooks")
    return OrderedDict()


def _storage(storage: object) -> object:
    if not isinstance(storage, torch.UntypedStorage | torch.TypedStorage):
        raise _Refused(f"a tensor built on a {type(storage).__name__} instead of a storage")
    return storage


def _metadata(metadata: object) -> dict[str, Any] | None:
    if metadata is not None and not isinstance(metadata, dict):
        raise _Refused(f"tensor metadata of type {type(metadata).__name__}")
    return metadata


def _rebuild_tensor_v2(
    storage: object,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: object,
    metadata: object = None,
) -> torch.Tensor:
    return torch._utils._rebuild_tensor_v2(
        _storage(storage), offset, size, stride, bool(requires_grad), _hooks(backward_hooks), _metadata(metadata)
    )


def _rebuild_parameter(data: object, requires_grad: bool, backward_hooks: object) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"a parameter built from a {type(data).__name__}")
    _hooks(backward_hooks)
    return torch.nn.Parameter(data, bool(requires_grad))


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # protocols 0-2 spell bytes as _codecs.encode(str, 'latin1'); other codecs are not needed and not allowed
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# _rebuild_tensor_v3 (uint16/32/64, float8) is left out: torch cannot unpickle those storages either
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # protocols 0-2 keep Python 2's module name
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}


class _TensorUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id (a torch.save archive read as a plain pickle)")


def load_tensor_pickle(path: str | Path) -> object:
    """Read a ``pickle.dump`` (or ``torch.save``) file that holds only tensors, dicts, lists and numbers.

    Args:
        path: the file.

    Returns:
        The unpickled object, tensors on the CPU.

    Raises:
        DataError: the file is missing or unreadable, or the pickle asks for anything else (a
            function, a class, an embedded full pickle); the message names what it asked for.
            Nothing the pickle asks for outside the table is ever called.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    with path.open("rb") as stream:
        header = stream.read(4)
    # a torch.save archive (a zip) goes to torch's own weights-only reader; a pickle that merely embeds
    # one (as storage bytes) would pass zipfile.is_zipfile, so only the first bytes count
    if header == b"PK\x03\x04":
        return _torch_archive(path)
    try:
        with path.open("rb") as stream:
            loaded = _TensorUnpickler(stream).load()
    except _Refused as refused:
        raise _refusal(path, refused.name) from None
    except _UNREADABLE as error:
        raise DataError(f"{path} is not a readable tensor pickle ({_one_line(error)}); {_HINT}") from None
    # a legacy torch.save file starts with this number, pickled on its own; the tensors follow
    if type(loaded) is int and loaded == torch.serialization.MAGIC_NUMBER:
        return _torch_archive(path)
    return loaded


# what a damaged or hostile pickle raises from inside the unpickler (besides _Refused)
_UNREADABLE = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    RuntimeError,
)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def refused_global(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only reader refused, named from its (multi-line) error: ``posix.system``."""
    match = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else "an object that torch's weights-only reader refuses"


def _refusal(path: Path, asked: str) -> RefusedPickleError:
    return RefusedPickleError(f"bindguard refuses to load {path}: the pickle asks for {asked}; {_HINT}", asked=asked)


def _torch_archive(path: Path) -> object:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise _refusal(path, refused_global(error)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError) as error:
        if "TorchScript" in str(error):
            raise _refusal(path, "TorchScript code (a torch.jit.save archive)") from None
        raise DataError(f"{path} is not a readable torch archive ({_one_line(error)}); {_HINT}") from None
