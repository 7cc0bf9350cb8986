"""The restricted unpickler: tensor pickles load bit-exactly, and no hostile pickle runs its payload.

Every hostile pickle is first run through plain ``pickle.loads`` (a positive control: the payload
really creates its marker file), then through ``load_tensor_pickle``, after which the marker must not exist.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from bindguard._unpickle import load_tensor_pickle
from bindguard.errors import DataError


def _dump(path: Path, value: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


def _same(loaded: object, original: object) -> bool:
    if isinstance(original, torch.Tensor):
        return (
            type(loaded) is type(original)
            and loaded.dtype == original.dtype
            and loaded.shape == original.shape
            and torch.equal(loaded, original)
        )
    if isinstance(original, dict):
        return (
            type(loaded) is type(original)
            and list(loaded) == list(original)
            and all(_same(loaded[key], value) for key, value in original.items())
        )
    if isinstance(original, list | tuple):
        return type(loaded) is type(original) and all(_same(a, b) for a, b in zip(loaded, original, strict=True))
    return loaded == original


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unibind_style_centres_pickle_loads_identically(tmp_path: Path, protocol: int) -> None:
    generator = torch.Generator().manual_seed(0)
    centres = {label: torch.randn(50, 16, generator=generator) for label in ("airplane", "cat", "dog", "ship")}
    loaded = load_tensor_pickle(_dump(tmp_path / "centres.pkl", centres, protocol))
    assert _same(loaded, centres)
    assert list(loaded) == ["airplane", "cat", "dog", "ship"]  # order is the class order


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_dtypes_views_parameters_and_containers_round_trip(tmp_path: Path, protocol: int) -> None:
    value = {
        "half": torch.randn(3, 4).half(),
        "bfloat16": torch.randn(5).bfloat16(),
        "int64": torch.arange(6).view(2, 3),
        "bool": torch.tensor([True, False]),
        "strided view": torch.arange(10.0)[2:9:3],
        "transposed": torch.randn(3, 2).t(),
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "ordered": OrderedDict(b=torch.zeros(1), a=torch.ones(1)),
        "nested": [1, 2.5, None, "text", (3, b"raw bytes"), {"inner": torch.full((2,), 7.0)}],
        "set": {1, 2, 3},
    }
    loaded = load_tensor_pickle(_dump(tmp_path / "mixed.pkl", value, protocol))
    assert _same(loaded, value)
    assert loaded["strided view"].stride() == value["strided view"].stride()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_torch_save_files_load_through_the_weights_only_reader(tmp_path: Path, zipped: bool) -> None:
    value = {"cat": torch.randn(4, 3), "dog": torch.randn(4, 3)}
    path = tmp_path / "centres.pt"
    torch.save(value, path, _use_new_zipfile_serialization=zipped)
    assert _same(load_tensor_pickle(path), value)


# ---------------------------------------------------------------- hostile pickles


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, ([sys.executable, "-c", f"open({str(self.marker)!r}, 'w').close()"],))


class _NestedTorchLoad:
    """A storage whose bytes are a full torch.save pickle: torch's own ``_load_from_bytes`` unpickles it unrestricted."""

    def __init__(self, marker: Path, zipped: bool) -> None:
        buffer = io.BytesIO()
        torch.save(_Shell(marker), buffer, _use_new_zipfile_serialization=zipped)
        self.inner = buffer.getvalue()

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.inner,))


def _settle(loaded: object) -> None:
    if isinstance(loaded, dict):
        for value in loaded.values():
            _settle(value)
    elif isinstance(loaded, subprocess.Popen):
        loaded.wait(timeout=60)


HOSTILE = {
    "os.system": (lambda marker: _Shell(marker), f"{os.system.__module__}.system"),
    "builtins.eval": (lambda marker: _Eval(marker), "builtins.eval"),
    "subprocess.Popen": (lambda marker: _Popen(marker), "subprocess.Popen"),
    "nested torch.load, legacy": (lambda marker: _NestedTorchLoad(marker, zipped=False), "system"),
    "nested torch.load, zip": (lambda marker: _NestedTorchLoad(marker, zipped=True), "system"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path, name: str) -> None:
    build, refused = HOSTILE[name]
    marker = tmp_path / "payload-ran"
    blob = pickle.dumps({"cat": torch.zeros(2), "evil": build(marker)})

    _settle(pickle.loads(blob))  # positive control: an ordinary unpickler does run the payload
    assert marker.exists(), "the payload should create its marker under pickle.loads"
    marker.unlink()

    path = tmp_path / "centres.pkl"
    path.write_bytes(blob)
    with pytest.raises(DataError) as caught:
        load_tensor_pickle(path)
    message = str(caught.value)
    assert "\n" not in message
    assert refused in message and "only unpickles tensors" in message and str(path) in message
    assert not marker.exists()


def test_torch_save_archive_with_a_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "centres.pt"
    torch.save({"evil": _Shell(marker)}, path)
    with pytest.raises(DataError, match=r"asks for \w+\.system"):
        load_tensor_pickle(path)
    assert not marker.exists()


class _Rebuild:
    """A tensor pickled with arguments a real tensor never has."""

    def __init__(self, storage: object, hooks: object) -> None:
        self.storage, self.hooks = storage, hooks

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (self.storage, 0, (2,), (1,), False, self.hooks))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_Rebuild(torch.zeros(2)._typed_storage(), OrderedDict(hook=1)), "a tensor with backward hooks"),
        (_Rebuild([1.0, 2.0], OrderedDict()), "a tensor built on a list instead of a storage"),
        # uint16 storages are left out: torch cannot unpickle them either
        (torch.zeros(2, dtype=torch.uint16), "asks for torch._utils._rebuild_tensor_v3"),
    ],
)
def test_tensors_with_unusual_parts_are_refused(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_tensor_pickle(_dump(tmp_path / "odd.pkl", {"x": value}))


def test_bytes_through_a_codec_other_than_latin1_are_refused(tmp_path: Path) -> None:
    # protocol 2 spells bytes as _codecs.encode(text, 'latin1'); nothing else may reach a codec
    blob = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x06\x00\x00\x00rot_13\x86R."
    with pytest.raises(DataError, match="_codecs.encode with encoding 'rot_13'"):
        load_tensor_pickle(_write(tmp_path / "codec.pkl", blob))


def test_persistent_ids_are_refused(tmp_path: Path) -> None:
    class WithPersistentIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "external" else None

    buffer = io.BytesIO()
    WithPersistentIds(buffer).dump({"x": "external"})
    with pytest.raises(DataError, match="persistent id"):
        load_tensor_pickle(_write(tmp_path / "pid.pkl", buffer.getvalue()))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "reason"), [(b"", "ran out of input"), (b"\x80\x04\x95", "truncated"), (b"not a pickle", "")]
)
def test_damaged_files_fail_with_one_line(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(DataError, match="not a readable tensor pickle") as caught:
        load_tensor_pickle(_write(tmp_path / "broken.pkl", data))
    assert reason in str(caught.value).lower() and "\n" not in str(caught.value)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_tensor_pickle(tmp_path / "absent.pkl")
