"""The bad-input corpus: every wrong input a user can give is refused in one line that names it.

Each case builds its bad input in its own folder (data files, calibration folders, weights, results
folders, option values) and asserts the promise of the tool:

- CLI: exit code 2, nothing on stdout, exactly one non-empty line on stderr, starting ``error:``,
  naming the input that was wrong (each case declares the substrings), no traceback;
- Python API: a ``BindguardError`` whose message is one line naming the input;
- both: nothing half-written (every folder the case can reach is the same before and after), and
  the refusal comes before any heavy work (each case has ``CASE_SECONDS``).

Good inputs next to the bad ones (float16/float64 data, the pristine fixtures) must be accepted,
so that a case fails for its own reason and not because everything is refused.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import shutil
import signal
import stat
import string
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import bindguard
from bindguard.cli.main import app
from bindguard.data.tensor_file import parse_class_names, parse_templates
from bindguard.errors import BindguardError, DataError
from bindguard.evaluation.results import Results, read_results

CASE_SECONDS = 15  # a refusal comes before heavy work; this bounds a case that does not refuse at all
runner = CliRunner()


# ---------------------------------------------------------------------------------------------------------------------
# How a case is run and judged


class TooSlow(BaseException):
    """Raised in a case that ran past CASE_SECONDS: it did not refuse before the heavy work."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TooSlow(f"no refusal within {seconds} s: the input was accepted, or refused only after heavy work")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots`` (links not followed) with its kind, size, mtime and link target."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for folder, folders, files in os.walk(root):
            for name in folders + files:
                path = Path(folder, name)
                status = path.lstat()
                target = os.readlink(path) if path.is_symlink() else None
                seen[str(path)] = (stat.S_IFMT(status.st_mode), status.st_size, status.st_mtime_ns, target)
    return seen


def names_in(line: str, names: tuple[str, ...]) -> list[str]:
    """The declared names missing from ``line`` (in any case); a name may list alternatives joined by '|'."""
    line = line.lower()
    return [name for name in names if not any(alternative.lower() in line for alternative in name.split("|"))]


# ---------------------------------------------------------------------------------------------------------------------
# Shared good inputs, made once, and the folder each case spoils copies of them in


@dataclass(frozen=True)
class Shared:
    root: Path
    data: Path  # a good user data file: 2 images, labels, class names, templates
    calibration: Path  # a real calibration of the image tower (noise 0)
    noisy: Path  # the same with a randomized purifier (noise 0.25): certify accepts it
    results: Path  # a real results folder plus a calibration row
    weights: Path  # TinyBind's shipped weights


def good_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"image": torch.rand(2, 3, 32, 32, generator=generator), "image.labels": torch.tensor([0, 1])}


def good_metadata() -> dict[str, str]:
    return {"class_names": json.dumps(["cat", "dog"]), "templates": json.dumps({"image": ["a photo of a {}."]})}


def calibration_row() -> dict:
    return {
        "modality": "image", "task": "calibration", "method": "purifier+lora", "objective": "ce", "mode": "adaptive",
        "train_threat": {"norm": "linf", "eps": 4 / 255}, "norm": "linf", "eps": 4 / 255, "eps_abs": 4 / 255,
        "attack": "standard", "attacks": ["apgd-ce"], "steps": 1, "square_queries": 0, "eot_samples": 1, "n": 2,
        "before": {"clean_top1": 1.0, "clean_top5": 1.0, "robust_top1": 0.0, "robust_top5": 0.5},
        "after": {"clean_top1": 1.0, "clean_top5": 1.0, "transfer_top1": 0.5, "transfer_top5": 1.0,
                  "robust_top1": 0.5, "robust_top5": 1.0, "robust_top1_ci95": [0.1, 0.9]},
        "instance_recall@1": None, "trainable_parameters": 10, "trainable_fraction": 0.001, "train_seconds": 1.0,
        "flags": [],
    }  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_shipped_tinybind() -> Iterator[None]:
    """Build the shipped TinyBind once for the module: the corpus is about refusals, and each command
    would otherwise spend most of its time building the same frozen model. Cases with ``--weights``
    still load their own file; the model is never modified (a calibration wraps it)."""
    from bindguard.encoders import tinybind

    build = tinybind.create_tinybind
    built: dict[str, Any] = {}

    @functools.wraps(build)  # the registry checks options against the real factory's signature
    def cached(*, weights: Any = None, device: Any = "cpu", **options: Any) -> Any:
        if weights is not None or options or str(device) != "cpu":
            return build(weights=weights, device=device, **options)
        if "model" not in built:
            built["model"] = build()
        return built["model"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tinybind, "create_tinybind", cached)
        yield


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    from bindguard.encoders.tinybind import shipped_weights_path

    root = tmp_path_factory.mktemp("shared")
    data = _save(root / "good.safetensors")
    calibration = root / "calibration"
    bindguard.calibrate(
        "tinybind", "builtin", modalities="image", limit=8, out=calibration, epochs=1, attack_steps=1, batch_size=8
    )
    noisy = root / "noisy"
    shutil.copytree(calibration, noisy)
    config = json.loads((noisy / "config.json").read_text())
    config["modalities"]["image"]["options"]["noise"] = 0.25  # an option, not a tensor: the checksum still holds
    (noisy / "config.json").write_text(json.dumps(config))
    results = root / "results"
    bindguard.evaluate(
        "tinybind",
        str(data),
        attacks="fgsm",
        eps="4/255",
        n=2,
        modalities="image",
        steps=1,
        square_queries=0,
        checks=False,
        out=results,
    )
    written = json.loads((results / "results.json").read_text())
    written["rows"].append(calibration_row())
    (results / "results.json").write_text(json.dumps(written))
    return Shared(root, data, calibration, noisy, results, shipped_weights_path())


@dataclass(frozen=True)
class Place:
    """One case's folder and the shared inputs; ``fill`` puts them in for a case's {placeholders}."""

    root: Path
    shared: Shared

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def afile(self) -> Path:
        path = self.root / "afile"
        if not path.exists():
            path.write_text("a regular file\n")
        return path

    def copy(self, source: Path, name: str) -> Path:
        target = self.root / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    def fill(self, text: str, **more: Path) -> str:
        """``text`` with {out}, {root}, {afile}... replaced; other braces (a bad template) are left as they are."""
        fields = {
            "out": self.out,
            "root": self.root,
            "cal": self.shared.calibration,
            "noisy": self.shared.noisy,
            "results": self.shared.results,
        } | more
        if "{afile}" in text:
            fields["afile"] = self.afile
        for key, value in fields.items():
            text = text.replace("{" + key + "}", str(value))
        return text


@dataclass(frozen=True)
class CliCase:
    """``args`` and ``names`` may hold {placeholders}; ``prepare`` makes the bad input and returns more of them."""

    args: tuple[str, ...]
    names: tuple[str, ...]
    prepare: Callable[[Place], dict[str, Path]] | None = None


@dataclass(frozen=True)
class ApiCase:
    """``call`` makes the bad input in the place and calls the library; it must raise a BindguardError."""

    call: Callable[[Place], object]
    names: tuple[str, ...]
    prepare: Callable[[Place], dict[str, Path]] | None = None


CLI: dict[str, CliCase] = {}
API: dict[str, ApiCase] = {}


def cli(case_id: str, args: tuple[str, ...], names: tuple[str, ...], prepare: Callable | None = None) -> None:
    assert case_id not in CLI, case_id
    CLI[case_id] = CliCase(tuple(args), names, prepare)


def api(case_id: str, call: Callable[[Place], object], names: tuple[str, ...], prepare: Callable | None = None) -> None:
    assert case_id not in API, case_id
    API[case_id] = ApiCase(call, names, prepare)


# Every command's arguments that keep a case tiny; a case's own arguments come after (click keeps the last value).
EVAL = ("eval", "--out", "{out}", "--n", "2", "--modalities", "image", "--quiet")
EVAL_ATTACKED = (*EVAL, "--attacks", "fgsm", "--steps", "1", "--square-queries", "0", "--no-checks")
ATTACK = ("attack", "--out", "{out}", "--n", "2", "--attack", "fgsm", "--steps", "1")
CALIBRATE = (
    "calibrate",
    "--out",
    "{out}",
    "--modalities",
    "image",
    "--limit",
    "8",
    "--epochs",
    "1",
    "--attack-steps",
    "1",
    "--batch-size",
    "8",
    "--no-evaluate",
    "--quiet",
)
CERTIFY = ("certify", "--calibration", "{noisy}", "--n", "2", "--draws", "8")
DEMO = ("demo", "--out", "{out}", "--quick", "--quiet")
TINY_EVAL = {"attacks": None, "n": 2, "modalities": "image"}
TINY_RECIPE = {"limit": 8, "epochs": 1, "attack_steps": 1, "batch_size": 8, "modalities": "image"}


# ---------------------------------------------------------------------------------------------------------------------
# User data files (--data FILE): each writer makes the file (or link, or folder) and returns the path to give

DROP = object()


def _save(path: Path, tensors: dict | None = None, metadata: dict | None = None, **changes: Any) -> Path:
    """A good data file with ``changes``: tensor keys (``image``, ``image_labels`` for ``image.labels``)
    and metadata keys (``class_names``, ``templates``) set to a value, or to DROP to leave them out."""
    tensors = good_tensors() if tensors is None else tensors
    metadata = good_metadata() if metadata is None else metadata
    for key, value in changes.items():
        key = key.replace("_labels", ".labels")
        target = metadata if key in ("class_names", "templates") else tensors
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _images(shape: tuple[int, ...] = (2, 3, 32, 32), dtype: torch.dtype = torch.float32, fill: float | None = None):
    images = torch.rand(shape).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    if fill is not None:
        images.view(-1)[len(images.view(-1)) // 2] = fill
    return images


def _raw(payload: bytes) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(payload)
        return path

    return write


def _header(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


def _truncated(path: Path) -> Path:
    _save(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def _dangling(path: Path) -> Path:
    link = path.with_name("dangling.safetensors")
    link.symlink_to(path.with_name("gone.safetensors"))
    return link


def _loop(path: Path) -> Path:
    first, second = path.with_name("loop-a.safetensors"), path.with_name("loop-b.safetensors")
    first.symlink_to(second)
    second.symlink_to(first)
    return first


def _folder(name: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        folder = path.with_name(name)
        folder.mkdir()
        _save(folder / "inside.safetensors")
        return folder

    return make


def _unreadable(path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root reads any file, so a file without read permission cannot be made")
    _save(path)
    path.chmod(0)
    return path


def _wrong_suffix(path: Path) -> Path:
    other = path.with_name("data.npz")
    _save(other)
    return other


TEMPLATE_HINT = "templates"
# id -> (writer, extra names beyond the path, refused only when the rows are read)
DATA: dict[str, tuple[Callable[[Path], Path], tuple[str, ...], bool]] = {
    "empty-file": (_raw(b""), (), False),
    "truncated-file": (_truncated, (), False),
    "header-length-beyond-the-file": (_raw(_header({"__metadata__": {}}, length=10**9)), (), False),
    "header-not-json": (_raw(_header(b"{this is not json}", b"\0" * 16)), (), False),
    "header-not-utf8": (_raw(_header(b"\xff\xfe\xfd\xfc", b"\0" * 16)), (), False),
    "header-a-json-list": (_raw(_header([1, 2, 3])), (), False),
    "header-offsets-beyond-the-file": (
        _raw(_header({"image": {"dtype": "F32", "shape": [2, 3, 32, 32], "data_offsets": [0, 24576]}}, b"\0" * 64)),
        (),
        False,
    ),
    "header-without-offsets": (_raw(_header({"image": {"dtype": "F32", "shape": [1]}}, b"\0" * 4)), (), False),
    "random-bytes": (_raw(bytes(range(256)) * 7), (), False),
    "text-file": (_raw(b"image,label\n0.5,cat\n"), (), False),
    "int32-inputs": (lambda p: _save(p, image=_images(dtype=torch.int32)), ("image", "int32|I32"), False),
    "uint8-inputs": (lambda p: _save(p, image=_images(dtype=torch.uint8)), ("image", "uint8|U8"), False),
    "bool-inputs": (lambda p: _save(p, image=_images(dtype=torch.bool)), ("image", "bool|BOOL"), False),
    "float8-inputs": (lambda p: _save(p, image=_images().to(torch.float8_e4m3fn)), ("image", "F8|float8"), False),
    "zero-d-inputs": (lambda p: _save(p, image=torch.tensor(0.5)), ("image",), False),
    "one-d-inputs": (lambda p: _save(p, image=torch.rand(2)), ("image",), False),
    "no-samples": (
        lambda p: _save(p, image=torch.rand(0, 3, 32, 32), image_labels=torch.zeros(0, dtype=torch.long)),
        ("image",),
        False,
    ),
    "small-images": (lambda p: _save(p, image=_images((2, 3, 16, 16))), ("image",), True),
    "images-without-channels": (lambda p: _save(p, image=_images((2, 32, 32))), ("image",), True),
    "one-channel-images": (lambda p: _save(p, image=_images((2, 1, 32, 32))), ("image",), True),
    "five-d-images": (lambda p: _save(p, image=_images((2, 3, 32, 32, 1))), ("image",), True),
    "nan-in-inputs": (lambda p: _save(p, image=_images(fill=math.nan)), ("image", "NaN"), True),
    "inf-in-inputs": (lambda p: _save(p, image=_images(fill=math.inf)), ("image", "Inf"), True),
    "minus-inf-in-inputs": (lambda p: _save(p, image=_images(fill=-math.inf)), ("image", "Inf"), True),
    "inputs-outside-the-domain": (lambda p: _save(p, image=_images() * 255), ("image", "domain"), True),
    "labels-missing": (lambda p: _save(p, image_labels=DROP), ("image.labels",), False),
    "labels-float": (lambda p: _save(p, image_labels=torch.tensor([0.0, 1.0])), ("image.labels",), False),
    "labels-bool": (lambda p: _save(p, image_labels=torch.tensor([False, True])), ("image.labels",), False),
    "labels-two-d": (lambda p: _save(p, image_labels=torch.tensor([[0], [1]])), ("image.labels",), False),
    "labels-zero-d": (lambda p: _save(p, image_labels=torch.tensor(1)), ("image.labels",), False),
    "labels-too-few": (lambda p: _save(p, image_labels=torch.tensor([0])), ("image.labels",), False),
    "labels-too-many": (lambda p: _save(p, image_labels=torch.tensor([0, 1, 1])), ("image.labels",), False),
    "labels-beyond-the-classes": (lambda p: _save(p, image_labels=torch.tensor([0, 2])), ("image.labels", "2"), False),
    "labels-negative": (lambda p: _save(p, image_labels=torch.tensor([-1, 0])), ("image.labels", "-1"), False),
    "labels-without-inputs": (lambda p: _save(p, image=DROP), ("image",), False),
    "only-other-modalities": (
        lambda p: _save(p, {"audio": torch.zeros(2, 16000), "audio.labels": torch.tensor([0, 1])}),
        ("audio",),
        False,
    ),
    "no-metadata": (lambda p: _save(p, metadata={}), ("class_names",), False),
    "class-names-missing": (lambda p: _save(p, class_names=DROP), ("class_names",), False),
    "class-names-not-json": (lambda p: _save(p, class_names="[cat, dog]"), ("class_names",), False),
    "class-names-an-object": (lambda p: _save(p, class_names='{"0": "cat"}'), ("class_names",), False),
    "class-names-a-string": (lambda p: _save(p, class_names='"cat,dog"'), ("class_names",), False),
    "class-names-empty": (lambda p: _save(p, class_names="[]"), ("class_names",), False),
    "class-names-numbers": (lambda p: _save(p, class_names="[0, 1]"), ("class_names",), False),
    "class-names-null-entry": (lambda p: _save(p, class_names='["cat", null]'), ("class_names",), False),
    "class-names-blank-entry": (lambda p: _save(p, class_names='["cat", " "]'), ("class_names",), False),
    "class-names-repeated": (lambda p: _save(p, class_names='["cat", "cat"]'), ("class_names", "cat"), False),
    "templates-not-json": (lambda p: _save(p, templates="{image: [a {}]}"), ("templates",), False),
    "templates-a-list": (lambda p: _save(p, templates='["a photo of a {}."]'), ("templates",), False),
    "templates-a-string": (lambda p: _save(p, templates='"a photo of a {}."'), ("templates",), False),
    "templates-value-a-string": (
        lambda p: _save(p, templates='{"image": "a photo of a {}."}'),
        ("templates", "image"),
        False,
    ),
    "templates-value-empty": (lambda p: _save(p, templates='{"image": []}'), ("templates", "image"), False),
    "templates-value-numbers": (lambda p: _save(p, templates='{"image": [1, 2]}'), ("templates", "image"), False),
    "templates-unknown-modality": (
        lambda p: _save(p, templates='{"smell": ["a {}"]}'),
        ("templates", "smell"),
        False,
    ),
    "template-two-indexed-fields": (
        lambda p: _save(p, templates='{"image": ["a {0} of {1}"]}'),
        ("templates", "a {0} of {1}"),
        False,
    ),
    "template-named-field": (lambda p: _save(p, templates='{"image": ["a {x}"]}'), ("templates", "{x}"), False),
    "template-no-placeholder": (
        lambda p: _save(p, templates='{"image": ["a photo"]}'),
        ("templates", "a photo"),
        False,
    ),
    "template-two-placeholders": (
        lambda p: _save(p, templates='{"image": ["a {} and a {}"]}'),
        ("templates",),
        False,
    ),
    "template-unbalanced-open": (lambda p: _save(p, templates='{"image": ["a {"]}'), ("templates", "a {"), False),
    "template-unbalanced-close": (lambda p: _save(p, templates='{"image": ["a {} }"]}'), ("templates",), False),
    "template-format-spec": (lambda p: _save(p, templates='{"image": ["a {:>10}"]}'), ("templates",), False),
    "template-conversion": (lambda p: _save(p, templates='{"image": ["a {!r}"]}'), ("templates",), False),
    "template-attribute": (lambda p: _save(p, templates='{"image": ["a {.upper}"]}'), ("templates",), False),
    "data-file-missing": (lambda p: p.with_name("missing.safetensors"), ("not found|does not exist",), False),
    "dangling-symlink": (_dangling, ("gone.safetensors|broken",), False),
    "symlink-loop": (_loop, ("symlink loop|loop of symlinks|too many levels",), False),
    "folder-named-safetensors": (_folder("folder.safetensors"), ("folder",), False),
    "unreadable-file": (_unreadable, ("permission",), False),
}


def _data_prepare(writer: Callable[[Path], Path]) -> Callable[[Place], dict[str, Path]]:
    return lambda place: {"data": writer(place.root / "data.safetensors")}


for _id, (_writer, _names, _lazy) in DATA.items():
    cli(f"eval-data-{_id}", (*EVAL, "--data", "{data}"), ("{data}", *_names), _data_prepare(_writer))
    if _lazy:  # refused when the encoder reads the rows: the API case has to evaluate too
        _call = lambda place: bindguard.evaluate("tinybind", str(place.data), out=place.out, **TINY_EVAL)  # noqa: E731
    else:
        _call = lambda place: bindguard.load_dataset(str(place.data), modalities=["image"])  # noqa: E731
    api(f"data-{_id}", _call, ("{data}", *_names), prepare=_data_prepare(_writer))

# paths that are not data files at all: the message must say what they are, not "unknown data set"
cli(
    "eval-data-a-folder",
    (*EVAL, "--data", "{data}"),
    ("{data}", "folder"),
    lambda place: {"data": _folder("datadir")(place.root / "x")},
)
cli(
    "eval-data-wrong-suffix",
    (*EVAL, "--data", "{data}"),
    ("{data}", ".safetensors"),
    lambda place: {"data": _wrong_suffix(place.root / "x")},
)
api(
    "evaluate-data-a-folder",
    lambda place: bindguard.evaluate("tinybind", place.data, out=place.out, **TINY_EVAL),
    ("{data}", "folder"),
    prepare=lambda place: {"data": _folder("datadir")(place.root / "x")},
)
cli(
    "attack-data-nan",
    (*ATTACK, "--modality", "image", "--data", "{data}"),
    ("{data}", "NaN"),
    lambda place: {"data": _save(place.root / "nan.safetensors", image=_images(fill=math.nan))},
)
cli(
    "calibrate-data-labels-missing",
    (*CALIBRATE, "--data", "{data}"),
    ("{data}", "image.labels"),
    lambda place: {"data": _save(place.root / "nolabels.safetensors", image_labels=DROP)},
)
cli(
    "certify-data-class-names-missing",
    (*CERTIFY, "--data", "{data}"),
    ("{data}", "class_names"),
    lambda place: {"data": _save(place.root / "nonames.safetensors", class_names=DROP)},
)


# ---------------------------------------------------------------------------------------------------------------------
# Calibration folders (--calibration DIR): copies of the shared calibration, each spoiled one way


def _spoil_config(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def spoil(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return spoil


def _image_config(**changes: Any) -> Callable[[Path], None]:
    def edit(config: dict) -> None:
        for key, value in changes.items():
            target = config["modalities"]["image"]
            *parents, last = key.split("__")
            for parent in parents:
                target = target[parent]
            if value is DROP:
                del target[last]
            else:
                target[last] = value

    return _spoil_config(edit)


def _header_field(key: str, value: object) -> Callable[[Path], None]:
    def edit(config: dict) -> None:
        if value is DROP:
            del config[key]
        else:
            config[key] = value

    return _spoil_config(edit)


def _write_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _resave_tensors(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    """New tensors with their true checksum in config.json: only the tensors themselves are wrong."""

    def spoil(folder: Path) -> None:
        import hashlib

        from safetensors.torch import save

        tensors = change(load_file(str(folder / "model.safetensors")))
        blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "bindguard-calibration/1"})
        (folder / "model.safetensors").write_bytes(blob)
        _header_field("sha256", hashlib.sha256(blob).hexdigest())(folder)

    return spoil


def _tampered(folder: Path) -> None:
    blob = bytearray((folder / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(blob))


def _pickled_only(folder: Path) -> None:
    torch.save(load_file(str(folder / "model.safetensors")), folder / "model.pt")
    (folder / "model.safetensors").unlink()


def _first_key(tensors: dict) -> str:
    return sorted(tensors)[0]


NAN = float("nan")
# id -> (spoil, names beyond the folder)
CALIBRATION: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "empty-folder": (lambda f: [p.unlink() for p in f.iterdir()], ()),
    "config-missing": (_remove("config.json"), ("config.json",)),
    "tensors-missing": (_remove("model.safetensors"), ("model.safetensors",)),
    "config-not-json": (_write_text("config.json", "{format: calibration"), ("config.json",)),
    "config-empty": (_write_text("config.json", ""), ("config.json",)),
    "config-a-list": (_write_text("config.json", "[1, 2]"), ("config.json",)),
    "format-missing": (_header_field("format", DROP), ("format",)),
    "format-unknown": (_header_field("format", "bindguard-calibration/99"), ("format",)),
    "encoder-missing": (_header_field("encoder", DROP), ("encoder",)),
    "encoder-a-number": (_header_field("encoder", 7), ("encoder",)),
    "encoder-another-model": (_header_field("encoder", "imagebind@0123456789abcdef"), ("imagebind",)),
    "embed-dim-missing": (_header_field("embed_dim", DROP), ("embed_dim",)),
    "embed-dim-a-string": (_header_field("embed_dim", "384"), ("embed_dim",)),
    "embed-dim-wrong": (_header_field("embed_dim", 512), ("embed_dim|512",)),
    "embed-dim-negative": (_header_field("embed_dim", -384), ("embed_dim",)),
    "sha256-missing": (_header_field("sha256", DROP), ("sha256",)),
    "sha256-not-hex": (_header_field("sha256", "not a checksum"), ("sha256",)),
    "sha256-wrong": (_header_field("sha256", "0" * 64), ("sha256|checksum",)),
    "modalities-missing": (_header_field("modalities", DROP), ("modalities",)),
    "modalities-a-list": (_header_field("modalities", ["image"]), ("modalities",)),
    "modalities-empty": (_header_field("modalities", {}), ("modalities",)),
    "modality-unknown": (
        _spoil_config(lambda c: c["modalities"].update(smell=c["modalities"].pop("image"))),
        ("smell",),
    ),
    "modality-config-a-string": (_spoil_config(lambda c: c["modalities"].update(image="purifier")), ("image",)),
    "modality-field-mismatch": (_image_config(modality="audio"), ("audio",)),
    "modality-unknown-field": (_image_config(colour="blue"), ("colour",)),
    "method-missing": (_image_config(method=DROP), ("method",)),
    "method-unknown": (_image_config(method="magic"), ("magic",)),
    "method-a-number": (_image_config(method=3), ("method",)),
    "objective-unknown": (_image_config(objective="magic"), ("magic",)),
    "threat-not-an-object": (_image_config(threat="linf"), ("threat",)),
    "threat-eps-nan": (_image_config(threat__eps=NAN), ("eps", "nan")),
    "threat-eps-negative": (_image_config(threat__eps=-0.1), ("eps",)),
    "threat-norm-unknown": (_image_config(threat__norm="l3"), ("l3",)),
    "options-not-an-object": (_image_config(options=[4, 16]), ("options",)),
    "rank-nan": (_image_config(options__rank=NAN), ("rank", "nan")),
    "rank-zero": (_image_config(options__rank=0), ("rank",)),
    "rank-negative": (_image_config(options__rank=-4), ("rank",)),
    "rank-a-string": (_image_config(options__rank="four"), ("rank",)),
    "rank-fractional": (_image_config(options__rank=2.5), ("rank",)),
    "width-zero": (_image_config(options__width=0), ("width",)),
    "noise-negative": (_image_config(options__noise=-0.1), ("noise",)),
    "noise-nan": (_image_config(options__noise=NAN), ("noise", "nan")),
    "noise-infinite": (_image_config(options__noise=math.inf), ("noise", "inf")),
    "recipe-not-an-object": (_image_config(recipe="adaptive"), ("recipe",)),
    "trainable-parameters-negative": (
        _image_config(trainable_parameters=-1),
        ("trainable_parameters|trainable-parameters",),
    ),
    "tensors-tampered": (_tampered, ("model.safetensors",)),
    "tensors-random-bytes": (_write_text("model.safetensors", "garbage" * 100), ("model.safetensors",)),
    "tensors-corrupt-with-checksum": (
        lambda f: (
            _write_text("model.safetensors", "garbage")(f),
            _header_field("sha256", __import__("hashlib").sha256(b"garbage").hexdigest())(f),
        ),
        ("model.safetensors",),
    ),
    "pickled-checkpoint-only": (_pickled_only, ("model.pt",)),
    "tensors-all-nan": (
        _resave_tensors(lambda t: {k: torch.full_like(v, NAN) if v.is_floating_point() else v for k, v in t.items()}),
        ("NaN|finite",),
    ),
    "tensor-missing": (
        _resave_tensors(lambda t: {k: v for k, v in t.items() if k != _first_key(t)}),
        ("model.safetensors|missing",),
    ),
    "tensor-wrong-shape": (
        _resave_tensors(lambda t: t | {_first_key(t): torch.zeros(1, 2, 3)}),
        ("model.safetensors|shape",),
    ),
    "tensor-unexpected": (
        _resave_tensors(lambda t: t | {"image.extra.weight": torch.zeros(2)}),
        ("extra.weight",),
    ),
}


def _calibration_prepare(spoil: Callable[[Path], None]) -> Callable[[Place], dict[str, Path]]:
    def prepare(place: Place) -> dict[str, Path]:
        folder = place.copy(place.shared.calibration, "calibration")
        spoil(folder)
        return {"calibration": folder}

    return prepare


for _id, (_spoil, _names) in CALIBRATION.items():
    cli(
        f"eval-calibration-{_id}",
        (*EVAL, "--calibration", "{calibration}"),
        ("{calibration}", *_names),
        _calibration_prepare(_spoil),
    )
    api(
        f"create-encoder-calibration-{_id}",
        lambda place: bindguard.create_encoder("tinybind", calibration=place.calibration),
        ("{calibration}", *_names),
        prepare=_calibration_prepare(_spoil),
    )

cli("eval-calibration-missing", (*EVAL, "--calibration", "{root}/nowhere"), ("{root}/nowhere",))
cli("eval-calibration-a-file", (*EVAL, "--calibration", "{afile}"), ("{afile}",))
cli(
    "attack-calibration-tampered",
    (*ATTACK, "--calibration", "{calibration}"),
    ("{calibration}",),
    _calibration_prepare(_tampered),
)
cli(
    "certify-calibration-rank-zero",
    (*CERTIFY, "--calibration", "{calibration}"),
    ("{calibration}", "rank"),
    _calibration_prepare(_image_config(options__rank=0)),
)
cli(
    "calibrate-into-a-spoiled-calibration",
    (*CALIBRATE, "--out", "{calibration}"),
    ("{calibration}", "config.json"),
    _calibration_prepare(_write_text("config.json", "{not json")),
)


# A resume checkpoint (OUT/checkpoints/<modality>.safetensors) that cannot be resumed from
def _checkpoint(metadata: dict[str, str] | None, raw: bytes | None = None) -> Callable[[Place], dict[str, Path]]:
    def prepare(place: Place) -> dict[str, Path]:
        folder = place.root / "resume"
        (folder / "checkpoints").mkdir(parents=True)
        path = folder / "checkpoints" / "image.safetensors"
        if raw is not None:
            path.write_bytes(raw)
        else:
            save_file({"calibration.purifier.weight": torch.zeros(3)}, str(path), metadata=metadata)
        return {"resume": folder, "checkpoint": path}

    return prepare


CHECKPOINTS = {
    "no-metadata": _checkpoint(None),
    "format-unknown": _checkpoint({"format": "something/1", "epoch": "1", "recipe": "{}"}),
    "recipe-missing": _checkpoint({"format": "bindguard-calibration-checkpoint/1", "epoch": "1"}),
    "recipe-not-json": _checkpoint({"format": "bindguard-calibration-checkpoint/1", "epoch": "1", "recipe": "{x"}),
    "corrupt": _checkpoint(None, raw=b"\x10\0\0\0\0\0\0\0{not json at all"),
    "empty": _checkpoint(None, raw=b""),
}
for _id, _prepare in CHECKPOINTS.items():
    cli(f"calibrate-resume-checkpoint-{_id}", (*CALIBRATE, "--out", "{resume}"), ("{checkpoint}",), _prepare)
    api(
        f"calibrate-resume-checkpoint-{_id}",
        lambda place: bindguard.calibrate("tinybind", "builtin", out=place.resume, **TINY_RECIPE),
        ("{checkpoint}",),
        prepare=_prepare,
    )


# ---------------------------------------------------------------------------------------------------------------------
# TinyBind weights (--weights FILE): copies of the shipped file, each spoiled one way


def _weights(change: Callable[[dict, dict], None] | None = None, raw: bytes | None = None) -> Callable[[Place], dict]:
    def prepare(place: Place) -> dict[str, Path]:
        path = place.root / "weights.safetensors"
        if raw is not None:
            path.write_bytes(raw)
            return {"weights": path}
        from safetensors import safe_open

        with safe_open(str(place.shared.weights), framework="pt") as handle:
            metadata = dict(handle.metadata())
        tensors = load_file(str(place.shared.weights))
        if change is not None:
            change(tensors, metadata)
        save_file(tensors, str(path), metadata=metadata)
        return {"weights": path}

    return prepare


def _set(target: str, key: str, value: object) -> Callable[[dict, dict], None]:
    def change(tensors: dict, metadata: dict) -> None:
        chosen = tensors if target == "tensor" else metadata
        if value is DROP:
            del chosen[key]
        else:
            chosen[key] = value

    return change


WEIGHTS = {
    "missing": (lambda place: {"weights": place.root / "nowhere.safetensors"}, ()),
    "a-folder": (lambda place: {"weights": place.root}, ()),
    "empty": (_weights(raw=b""), ()),
    "text-file": (_weights(raw=b"these are not weights\n"), ()),
    "format-missing": (_weights(_set("metadata", "format", DROP)), ("format",)),
    "key-missing": (_weights(_set("tensor", "heads.image.0.weight", DROP)), ("heads.image.0.weight",)),
    "wrong-shape": (
        _weights(_set("tensor", "heads.image.0.weight", torch.zeros(4, 4, dtype=torch.float16))),
        ("heads.image.0.weight",),
    ),
    "nan-head": (
        _weights(_set("tensor", "heads.image.2.bias", torch.full((384,), NAN, dtype=torch.float16))),
        ("heads.image.2.bias|NaN",),
    ),
    "zero-audio-std": (_weights(_set("tensor", "audio_std", torch.tensor(0.0))), ("audio_std",)),
    "recipe-not-json": (_weights(_set("metadata", "recipe", "{logit_scale: 30")), ("recipe",)),
    "recipe-a-list": (_weights(_set("metadata", "recipe", "[30]")), ("recipe",)),
    "recipe-logit-scale-a-string": (_weights(_set("metadata", "recipe", '{"logit_scale": "hot"}')), ("logit_scale",)),
    "recipe-logit-scale-negative": (_weights(_set("metadata", "recipe", '{"logit_scale": -30}')), ("logit_scale",)),
}
for _id, (_prepare, _names) in WEIGHTS.items():
    cli(f"eval-weights-{_id}", (*EVAL, "--weights", "{weights}"), ("{weights}", *_names), _prepare)
    api(
        f"create-encoder-weights-{_id}",
        lambda place: bindguard.create_encoder("tinybind", weights=place.weights),
        ("{weights}", *_names),
        prepare=_prepare,
    )
cli(
    "calibrate-weights-nan-head",
    (*CALIBRATE, "--weights", "{weights}"),
    ("{weights}", "heads.image.2.bias|NaN"),
    WEIGHTS["nan-head"][0],
)


# ---------------------------------------------------------------------------------------------------------------------
# Real encoders' checkpoints (--model NAME --checkpoint PATH): refused before the full-size model is built


def _torch_file(contents: Callable[[], object]) -> Callable[[Place], dict[str, Path]]:
    def prepare(place: Place) -> dict[str, Path]:
        path = place.root / "checkpoint.pth"
        torch.save(contents(), path)
        return {"checkpoint": path}

    return prepare


def _text_checkpoint(place: Place) -> dict[str, Path]:
    path = place.root / "notes.pth"
    path.write_text("not a checkpoint\n")
    return {"checkpoint": path}


CHECKPOINTS = {
    "another-architecture": (
        lambda place: {"checkpoint": place.shared.weights},  # TinyBind's trained parts
        ("{checkpoint}", "missing"),
    ),
    "partial-state-dict": (_torch_file(lambda: {"modality_heads.vision.2.weight": torch.zeros(4, 4)}), ("missing",)),
    "needs-more-than-tensors": (
        _torch_file(lambda: {"weight": torch.zeros(1), "saved": datetime.date(2026, 1, 1)}),
        ("{checkpoint}",),
    ),
    "a-text-file": (_text_checkpoint, ("{checkpoint}",)),
    "missing": (lambda place: {"checkpoint": place.root / "absent.pth"}, ("absent.pth",)),
}
for _id, (_prepare, _names) in CHECKPOINTS.items():
    cli(
        f"eval-imagebind-checkpoint-{_id}",
        (*EVAL, "--model", "imagebind-huge", "--checkpoint", "{checkpoint}"),
        _names,
        _prepare,
    )
for _model, _needs in (("imagebind-huge", "imagebind_huge.pth"), ("languagebind", "checkpoint"), ("clip", "checkpoint"),
                       ("open-clip", "checkpoint"), ("clap", "checkpoint")):  # fmt: skip
    cli(f"eval-{_model}-without-checkpoint", (*EVAL, "--model", _model), (_needs,))
    api(
        f"create-encoder-{_model}-without-checkpoint",
        lambda place, model=_model: bindguard.create_encoder(model),
        (_needs,),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Results folders (bindguard report DIR, Results.read): copies of the shared results, each spoiled one way


def _results(edit: Callable[[dict], object] | None = None, text: str | None = None) -> Callable[[Path], None]:
    def spoil(folder: Path) -> None:
        if text is not None:
            (folder / "results.json").write_text(text)
            return
        results = json.loads((folder / "results.json").read_text())
        edit(results)
        (folder / "results.json").write_text(json.dumps(results))

    return spoil


def _row(index: int, key: str, value: object) -> Callable[[Path], None]:
    def edit(results: dict) -> None:
        row = results["rows"][index]
        *parents, last = key.split("/")
        for parent in parents:
            row = row[parent]
        if value is DROP:
            del row[last]
        else:
            row[last] = value

    return _results(edit)


def _top(key: str, value: object) -> Callable[[Path], None]:
    return _results(lambda results: results.pop(key) if value is DROP else results.update({key: value}))


CLEAN, ROBUST, CAL_ROW = 0, -2, -1  # the first row is clean zero-shot; the last two are robust and calibration
RESULTS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "results-missing": (lambda f: (f / "results.json").unlink(), ("results.json",)),
    "results-empty": (_results(text=""), ("results.json",)),
    "results-corrupt-json": (_results(text='{"schema_version": 1, "rows": ['), ("results.json",)),
    "results-a-list": (_results(text="[]"), ("results.json",)),
    "results-a-number": (_results(text="1"), ("results.json",)),
    "results-a-folder": (lambda f: ((f / "results.json").unlink(), (f / "results.json").mkdir()), ("results.json",)),
    "schema-version-missing": (_top("schema_version", DROP), ("schema_version|schema",)),
    "schema-version-unknown": (_top("schema_version", 2), ("schema",)),
    "schema-version-a-string": (_top("schema_version", "1"), ("schema",)),
    "rows-missing": (_top("rows", DROP), ("rows",)),
    "rows-an-object": (_top("rows", {"0": {}}), ("rows",)),
    "model-not-a-string": (_top("model", ["tinybind"]), ("model",)),
    "seed-a-string": (_top("seed", "zero"), ("seed",)),
    "settings-a-list": (_top("settings", []), ("settings",)),
    "provenance-a-string": (_top("provenance", "git"), ("provenance",)),
    "row-not-an-object": (_results(lambda r: r["rows"].append("row")), ("row",)),
    "row-top1-a-string": (_row(CLEAN, "top1", "0.9"), ("row 0", "top1")),
    "row-top1-nan": (_results(text=None, edit=lambda r: r["rows"][0].update(top1=NAN)), ("row 0", "top1")),
    "row-top1-above-one": (_row(CLEAN, "top1", 1.5), ("row 0", "top1")),
    "row-top1-negative": (_row(CLEAN, "top1", -0.1), ("row 0", "top1")),
    "row-top1-null": (_row(CLEAN, "top1", None), ("row 0", "top1")),
    "row-top1-missing": (_row(CLEAN, "top1", DROP), ("row 0", "top1")),
    "row-top1-bool": (_row(CLEAN, "top1", True), ("row 0", "top1")),
    "row-ci95-one-number": (_row(CLEAN, "top1_ci95", [0.5]), ("row 0", "top1_ci95")),
    "row-ci95-reversed": (_row(CLEAN, "top1_ci95", [0.9, 0.1]), ("row 0", "top1_ci95")),
    "row-n-negative": (_row(CLEAN, "n", -2), ("row 0", "'n'")),
    "row-n-fractional": (_row(CLEAN, "n", 2.5), ("row 0", "'n'")),
    "row-modality-missing": (_row(CLEAN, "modality", DROP), ("row 0", "modality")),
    "row-modality-a-number": (_row(CLEAN, "modality", 3), ("row 0", "modality")),
    "row-task-unknown": (_row(CLEAN, "task", "guessing"), ("row 0", "task")),
    "row-recall-above-one": (_row(1, "recall@1", 2.0), ("row 1", "recall@1")),
    "robust-row-eps-missing": (_row(ROBUST, "eps", DROP), ("eps",)),
    "robust-row-eps-negative": (_row(ROBUST, "eps", -0.01), ("eps",)),
    "robust-row-flags-a-string": (_row(ROBUST, "flags", "rises-with-eps"), ("flags",)),
    "robust-row-after-a-string": (_row(ROBUST, "after/fgsm", "high"), ("after",)),
    "calibration-row-before-missing": (_row(CAL_ROW, "before", DROP), ("before",)),
    "calibration-row-robust-top1-missing": (_row(CAL_ROW, "after/robust_top1", DROP), ("robust_top1",)),
    "calibration-row-after-above-one": (_row(CAL_ROW, "after/robust_top1", 7), ("after",)),
    "example-file-corrupt": (
        lambda f: ((f / "examples").mkdir(), (f / "examples" / "adversarial-image.safetensors").write_bytes(b"junk")),
        ("adversarial-image.safetensors",),
    ),
}
REPORT_ONLY = {"example-file-corrupt", "calibration-row-robust-top1-missing"}  # what only the report reads


def _results_prepare(spoil: Callable[[Path], None]) -> Callable[[Place], dict[str, Path]]:
    def prepare(place: Place) -> dict[str, Path]:
        folder = place.copy(place.shared.results, "results")
        spoil(folder)
        return {"run": folder}

    return prepare


for _id, (_spoil, _names) in RESULTS.items():
    cli(f"report-{_id}", ("report", "{run}", "--quiet"), ("{run}", *_names), _results_prepare(_spoil))
    if _id not in REPORT_ONLY:
        api(
            f"results-read-{_id}",
            lambda place: Results.read(place.run),
            ("{run}", *_names),
            prepare=_results_prepare(_spoil),
        )
cli("report-folder-missing", ("report", "{root}/nowhere", "--quiet"), ("{root}/nowhere",))
cli("report-a-file", ("report", "{afile}", "--quiet"), ("{afile}",))
api(
    "build-report-folder-missing",
    lambda place: bindguard.reports.build_report(place.root / "nowhere"),
    ("{root}/nowhere",),
)
api("build-report-a-file", lambda place: bindguard.reports.build_report(place.afile), ("{afile}",))
api(
    "build-report-top1-nan",
    lambda place: bindguard.reports.build_report(place.run),
    ("{run}", "top1"),
    prepare=_results_prepare(_row(CLEAN, "top1", NAN)),
)


# ---------------------------------------------------------------------------------------------------------------------
# Every command's options with values they must refuse

BIG_SEED = str(2**70)
# (command prefix, option, value, names); the id is made from them
FLAGS: list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = [
    ("n-zero", EVAL, ("--n", "0"), ("--n",)),
    ("n-negative", EVAL, ("--n", "-1"), ("--n",)),
    ("n-a-word", EVAL, ("--n", "ten"), ("--n",)),
    ("n-fractional", EVAL, ("--n", "2.5"), ("--n",)),
    ("batch-size-zero", EVAL, ("--batch-size", "0"), ("--batch-size",)),
    ("steps-zero", EVAL_ATTACKED, ("--steps", "0"), ("--steps",)),
    ("steps-a-word", EVAL_ATTACKED, ("--steps", "many"), ("--steps",)),
    ("square-queries-negative", EVAL_ATTACKED, ("--square-queries", "-1"), ("--square-queries",)),
    ("seed-beyond-64-bits", EVAL, ("--seed", BIG_SEED), ("--seed",)),
    ("seed-negative", EVAL, ("--seed", "-1"), ("--seed",)),
    ("seed-a-word", EVAL, ("--seed", "lucky"), ("--seed",)),
    ("eps-nan", EVAL_ATTACKED, ("--eps", "nan"), ("eps", "nan")),
    ("eps-inf", EVAL_ATTACKED, ("--eps", "inf"), ("eps", "inf")),
    ("eps-negative", EVAL_ATTACKED, ("--eps", "-1"), ("eps", "-1")),
    ("eps-zero", EVAL_ATTACKED, ("--eps", "0"), ("eps", "'0'")),
    ("eps-a-word", EVAL_ATTACKED, ("--eps", "abc"), ("eps", "abc")),
    ("eps-over-zero", EVAL_ATTACKED, ("--eps", "4/0"), ("eps", "4/0")),
    ("eps-beyond-the-domain", EVAL_ATTACKED, ("--eps", "2"), ("eps", "'2'")),
    ("eps-empty", EVAL_ATTACKED, ("--eps", ""), ("eps",)),
    ("eps-one-of-several-nan", EVAL_ATTACKED, ("--eps", "1/255,nan"), ("eps", "nan")),
    ("norm-l3", EVAL_ATTACKED, ("--norm", "l3"), ("norm", "l3")),
    ("modalities-unknown", EVAL, ("--modalities", "image,smell"), ("smell",)),
    ("modalities-empty", EVAL, ("--modalities", ""), ("modalit",)),
    ("modalities-text", EVAL, ("--modalities", "text"), ("text",)),
    ("attacks-unknown", EVAL, ("--attacks", "magic"), ("magic",)),
    ("attacks-empty", EVAL, ("--attacks", ""), ("attack",)),
    ("attacks-cross-modal", EVAL, ("--attacks", "cross-modal"), ("cross-modal",)),
    ("model-unknown", EVAL, ("--model", "magic"), ("magic",)),
    ("data-unknown", EVAL, ("--data", "cifar10"), ("cifar10",)),
    ("device-tpu", EVAL, ("--device", "tpu"), ("tpu",)),
    ("device-cuda-99", EVAL, ("--device", "cuda:99"), ("cuda:99",)),
    ("out-under-a-file", EVAL, ("--out", "{afile}/sub"), ("{afile}",)),
    ("out-a-file", EVAL, ("--out", "{afile}"), ("{afile}",)),
    ("unknown-option", EVAL, ("--bogus",), ("--bogus",)),
    ("extra-argument", EVAL, ("extra",), ("extra",)),
    ("n-zero", ATTACK, ("--n", "0"), ("--n",)),
    ("steps-zero", ATTACK, ("--steps", "0"), ("--steps",)),
    ("eps-nan", ATTACK, ("--eps", "nan"), ("eps", "nan")),
    ("eps-inf", ATTACK, ("--eps", "inf"), ("eps", "inf")),
    ("eps-negative", ATTACK, ("--eps", "-1"), ("eps", "-1")),
    ("norm-l3", ATTACK, ("--norm", "l3"), ("norm", "l3")),
    ("modality-unknown", ATTACK, ("--modality", "smell"), ("smell",)),
    ("modality-text", ATTACK, ("--modality", "text"), ("text",)),
    ("attack-unknown", ATTACK, ("--attack", "magic"), ("magic",)),
    (
        "target-modality-unknown",
        ATTACK,
        ("--attack", "cross-modal", "--steps", "2", "--target-modality", "smell"),
        ("smell",),
    ),
    ("seed-beyond-64-bits", ATTACK, ("--seed", BIG_SEED), ("--seed",)),
    ("seed-negative", ATTACK, ("--seed", "-1"), ("--seed",)),
    ("device-tpu", ATTACK, ("--device", "tpu"), ("tpu",)),
    ("out-under-a-file", ATTACK, ("--out", "{afile}/sub"), ("{afile}",)),
    ("out-a-file", ATTACK, ("--out", "{afile}"), ("{afile}",)),
    ("model-unknown", ATTACK, ("--model", "magic"), ("magic",)),
    ("unknown-option", ATTACK, ("--bogus",), ("--bogus",)),
    ("epochs-zero", CALIBRATE, ("--epochs", "0"), ("--epochs",)),
    ("batch-size-one", CALIBRATE, ("--batch-size", "1"), ("--batch-size",)),
    ("reg-nan", CALIBRATE, ("--reg", "nan"), ("--reg", "nan")),
    ("reg-inf", CALIBRATE, ("--reg", "inf"), ("--reg", "inf")),
    ("reg-negative", CALIBRATE, ("--reg", "-1"), ("--reg",)),
    ("reg-a-word", CALIBRATE, ("--reg", "strong"), ("--reg",)),
    ("learning-rate-inf", CALIBRATE, ("--learning-rate", "inf"), ("--learning-rate", "inf")),
    ("learning-rate-nan", CALIBRATE, ("--learning-rate", "nan"), ("--learning-rate", "nan")),
    ("learning-rate-zero", CALIBRATE, ("--learning-rate", "0"), ("--learning-rate",)),
    ("learning-rate-negative", CALIBRATE, ("--learning-rate", "-0.1"), ("--learning-rate",)),
    ("noise-inf", CALIBRATE, ("--noise", "inf"), ("--noise", "inf")),
    ("noise-nan", CALIBRATE, ("--noise", "nan"), ("--noise", "nan")),
    ("noise-negative", CALIBRATE, ("--noise", "-0.1"), ("--noise",)),
    ("limit-one", CALIBRATE, ("--limit", "1"), ("--limit",)),
    ("limit-zero", CALIBRATE, ("--limit", "0"), ("--limit",)),
    ("rank-zero", CALIBRATE, ("--rank", "0"), ("--rank",)),
    ("width-zero", CALIBRATE, ("--width", "0"), ("--width",)),
    ("attack-steps-zero", CALIBRATE, ("--attack-steps", "0"), ("--attack-steps",)),
    ("n-zero", CALIBRATE, ("--n", "0"), ("--n",)),
    ("steps-zero", CALIBRATE, ("--steps", "0"), ("--steps",)),
    ("square-queries-negative", CALIBRATE, ("--square-queries", "-1"), ("--square-queries",)),
    ("method-unknown", CALIBRATE, ("--method", "magic"), ("magic",)),
    ("method-empty", CALIBRATE, ("--method", ""), ("method",)),
    ("method-two-of-a-kind", CALIBRATE, ("--method", "lora+finetune"), ("lora+finetune",)),
    ("objective-unknown", CALIBRATE, ("--objective", "magic"), ("magic",)),
    ("mode-unknown", CALIBRATE, ("--mode", "magic"), ("magic",)),
    ("eps-nan", CALIBRATE, ("--eps", "nan"), ("eps", "nan")),
    ("eps-zero", CALIBRATE, ("--eps", "0"), ("eps", "'0'")),
    ("norm-l3", CALIBRATE, ("--norm", "l3"), ("norm", "l3")),
    ("seed-beyond-64-bits", CALIBRATE, ("--seed", BIG_SEED), ("--seed",)),
    ("seed-negative", CALIBRATE, ("--seed", "-1"), ("--seed",)),
    ("device-tpu", CALIBRATE, ("--device", "tpu"), ("tpu",)),
    ("device-cuda-99", CALIBRATE, ("--device", "cuda:99"), ("cuda:99",)),
    ("out-under-a-file", CALIBRATE, ("--out", "{afile}/sub"), ("{afile}",)),
    ("out-a-file", CALIBRATE, ("--out", "{afile}"), ("{afile}",)),
    ("modalities-unknown", CALIBRATE, ("--modalities", "smell"), ("smell",)),
    ("data-unknown", CALIBRATE, ("--data", "cifar10"), ("cifar10",)),
    ("model-unknown", CALIBRATE, ("--model", "magic"), ("magic",)),
    ("unknown-option", CALIBRATE, ("--bogus",), ("--bogus",)),
    ("recipe-unknown", CALIBRATE, ("--recipe", "magic"), ("magic",)),
    ("recipe-not-json", CALIBRATE, ("--recipe", "{afile}"), ("{afile}",)),
    ("recipe-a-folder", CALIBRATE, ("--recipe", "{root}"), ("{root}",)),
    ("recipe-flag-every-phase-sets", CALIBRATE, ("--recipe", "calmars"), ("calmars", "--epochs")),
    ("n-zero", CERTIFY, ("--n", "0"), ("--n",)),
    ("draws-too-few", CERTIFY, ("--draws", "4"), ("--draws",)),
    ("alpha-zero", CERTIFY, ("--alpha", "0"), ("--alpha",)),
    ("alpha-above-half", CERTIFY, ("--alpha", "0.9"), ("--alpha",)),
    ("alpha-nan", CERTIFY, ("--alpha", "nan"), ("--alpha", "nan")),
    ("modality-unknown", CERTIFY, ("--modality", "smell"), ("smell",)),
    ("modality-not-calibrated", CERTIFY, ("--modality", "audio"), ("audio",)),
    ("calibration-not-randomized", CERTIFY, ("--calibration", "{cal}"), ("noise",)),
    ("calibration-missing", CERTIFY, ("--calibration", "{root}/nowhere"), ("{root}/nowhere",)),
    ("device-tpu", CERTIFY, ("--device", "tpu"), ("tpu",)),
    ("model-unknown", CERTIFY, ("--model", "magic"), ("magic",)),
    ("out-under-a-file", DEMO, ("--out", "{afile}/sub"), ("{afile}",)),
    ("out-a-file", DEMO, ("--out", "{afile}"), ("{afile}",)),
    ("unknown-option", DEMO, ("--bogus",), ("--bogus",)),
    ("extra-argument", DEMO, ("extra",), ("extra",)),
    ("unknown-option", ("report", "{results}"), ("--bogus",), ("--bogus",)),
    ("extra-argument", ("report", "{results}"), ("extra",), ("extra",)),
]
for _id, _prefix, _args, _names in FLAGS:
    cli(f"{_prefix[0]}-{_id}", (*_prefix, *_args), _names)

cli("certify-without-calibration", ("certify", "--n", "2"), ("--calibration",))
cli("eval-without-out", ("eval", "--n", "2", "--modalities", "image"), ("--out",))
cli("report-without-folder", ("report",), ("DIR",))
cli("unknown-command", ("evaluate", "--out", "{out}"), ("evaluate",))
cli("models-list-unknown-option", ("models", "list", "--bogus"), ("--bogus",))
cli("tinybind-train-epochs-zero", ("tinybind", "train", "--out", "{out}/w.safetensors", "--epochs", "0"), ("--epochs",))
cli("tinybind-train-out-not-safetensors", ("tinybind", "train", "--out", "{out}/w.bin"), ("{out}/w.bin",))


# ---------------------------------------------------------------------------------------------------------------------
# The same kinds of values given to the Python API


def evaluate(**options: Any) -> Callable[[Place], object]:
    def call(place: Place) -> object:
        merged = TINY_EVAL | {"out": place.out} | options
        if "out" in options and isinstance(options["out"], str):
            merged["out"] = place.fill(options["out"])
        return bindguard.evaluate(merged.pop("encoder", "tinybind"), merged.pop("data", "builtin"), **merged)

    return call


ATTACKED = {"attacks": "fgsm", "steps": 1, "square_queries": 0, "checks": False}
for _id, _options, _names in [
    ("n-zero", {"n": 0}, ("n",)),
    ("n-negative", {"n": -1}, ("n",)),
    ("n-a-string", {"n": "ten"}, ("n",)),
    ("n-fractional", {"n": 2.5}, ("n",)),
    ("n-bool", {"n": True}, ("n",)),
    ("batch-size-zero", {"batch_size": 0}, ("batch_size|batch-size",)),
    ("steps-zero", ATTACKED | {"steps": 0}, ("steps",)),
    ("square-queries-negative", ATTACKED | {"square_queries": -1}, ("square_queries|square-queries",)),
    ("seed-beyond-64-bits", {"seed": 2**70}, ("seed",)),
    ("seed-negative", {"seed": -1}, ("seed",)),
    ("seed-a-float", {"seed": 0.5}, ("seed",)),
    ("eps-float-nan", ATTACKED | {"eps": NAN}, ("eps", "nan")),
    ("eps-string-nan", ATTACKED | {"eps": "nan"}, ("eps", "nan")),
    ("eps-inf", ATTACKED | {"eps": math.inf}, ("eps", "inf")),
    ("eps-negative", ATTACKED | {"eps": -1}, ("eps", "-1")),
    ("eps-zero", ATTACKED | {"eps": 0}, ("eps",)),
    ("eps-a-word", ATTACKED | {"eps": "abc"}, ("eps", "abc")),
    ("eps-over-zero", ATTACKED | {"eps": "4/0"}, ("eps", "4/0")),
    ("eps-a-list-with-nan", ATTACKED | {"eps": ["1/255", NAN]}, ("eps", "nan")),
    ("norm-l3", ATTACKED | {"norm": "l3"}, ("l3",)),
    ("modalities-unknown", {"modalities": "smell"}, ("smell",)),
    ("modalities-list-unknown", {"modalities": ["image", "smell"]}, ("smell",)),
    ("attacks-unknown", {"attacks": "magic"}, ("magic",)),
    ("encoder-unknown", {"encoder": "magic"}, ("magic",)),
    ("encoder-a-number", {"encoder": 7}, ("encoder|7",)),
    ("data-unknown", {"data": "cifar10"}, ("cifar10",)),
    ("data-a-number", {"data": 7}, ("data",)),
    ("device-tpu", {"device": "tpu"}, ("tpu",)),
    ("device-cuda-99", {"device": "cuda:99"}, ("cuda:99",)),
    ("out-under-a-file", {"out": "{afile}/sub"}, ("{afile}",)),
    ("out-a-file", {"out": "{afile}"}, ("{afile}",)),
    ("weights-missing", {"weights": "/nonexistent/weights.safetensors"}, ("/nonexistent/weights.safetensors",)),
    ("calibration-missing", {"calibration": "/nonexistent/calibration"}, ("/nonexistent/calibration",)),
]:
    api(f"evaluate-{_id}", evaluate(**_options), _names)


def calibrate(**options: Any) -> Callable[[Place], object]:
    def call(place: Place) -> object:
        merged = TINY_RECIPE | {"out": place.out} | options
        if isinstance(merged["out"], str):
            merged["out"] = place.fill(merged["out"])
        return bindguard.calibrate("tinybind", merged.pop("data", "builtin"), **merged)

    return call


for _id, _options, _names in [
    ("epochs-zero", {"epochs": 0}, ("epochs",)),
    ("batch-size-one", {"batch_size": 1}, ("batch_size|batch-size",)),
    ("reg-nan", {"reg": NAN}, ("reg", "nan")),
    ("reg-inf", {"reg": math.inf}, ("reg", "inf")),
    ("reg-negative", {"reg": -1.0}, ("reg",)),
    ("learning-rate-inf", {"learning_rate": math.inf}, ("learning_rate|learning-rate", "inf")),
    ("learning-rate-nan", {"learning_rate": NAN}, ("learning_rate|learning-rate", "nan")),
    ("weight-decay-nan", {"weight_decay": NAN}, ("weight_decay|weight-decay", "nan")),
    ("temperature-zero", {"temperature": 0.0}, ("temperature",)),
    ("logit-scale-inf", {"logit_scale": math.inf}, ("logit_scale|logit-scale",)),
    ("noise-inf", {"options": {"noise": math.inf}}, ("noise", "inf")),
    ("noise-nan", {"options": {"noise": NAN}}, ("noise", "nan")),
    ("rank-zero", {"options": {"rank": 0}}, ("rank",)),
    ("rank-a-string", {"options": {"rank": "four"}}, ("rank",)),
    ("width-zero", {"options": {"width": 0}}, ("width",)),
    ("option-unknown", {"options": {"colour": "blue"}}, ("colour",)),
    ("limit-one", {"limit": 1}, ("limit",)),
    ("method-unknown", {"method": "magic"}, ("magic",)),
    ("objective-unknown", {"objective": "magic"}, ("magic",)),
    ("mode-unknown", {"mode": "magic"}, ("magic",)),
    ("eps-nan", {"eps": "nan"}, ("eps", "nan")),
    ("norm-l3", {"norm": "l3"}, ("l3",)),
    ("seed-beyond-64-bits", {"seed": 2**70}, ("seed",)),
    ("seed-negative", {"seed": -1}, ("seed",)),
    ("keyword-unknown", {"bogus": 1}, ("bogus",)),
    ("out-under-a-file", {"out": "{afile}/sub"}, ("{afile}",)),
    ("device-tpu", {"device": "tpu"}, ("tpu",)),
    ("modalities-unknown", {"modalities": "smell"}, ("smell",)),
]:
    api(f"calibrate-{_id}", calibrate(**_options), _names)

api("create-encoder-unknown", lambda place: bindguard.create_encoder("magic"), ("magic",))
api("create-encoder-device-tpu", lambda place: bindguard.create_encoder("tinybind", device="tpu"), ("tpu",))
api("create-encoder-option-unknown", lambda place: bindguard.create_encoder("tinybind", colour="blue"), ("colour",))
api("load-dataset-unknown", lambda place: bindguard.load_dataset("cifar10"), ("cifar10",))
api("load-dataset-split-unknown", lambda place: bindguard.load_dataset("builtin", split="validation"), ("validation",))
api("load-dataset-limit-zero", lambda place: bindguard.load_dataset("builtin", limit=0), ("limit",))
api("load-dataset-file-limit-zero", lambda place: bindguard.load_dataset(str(place.shared.data), limit=0), ("limit",))
api(
    "load-dataset-file-against-input-shapes",
    lambda place: bindguard.load_dataset(
        str(place.data), modalities=["image"], input_shapes={bindguard.Modality.IMAGE: (3, 32, 32)}
    ),
    ("{data}", "(B, 3, 32, 32)"),
    prepare=lambda place: {"data": _save(place.root / "small.safetensors", image=_images((2, 3, 16, 16)))},
)
api("load-dataset-a-folder", lambda place: bindguard.load_dataset(str(place.root)), ("{root}", "folder"))
api("attack-samples-eps-nan", lambda place: bindguard.attack_samples(eps="nan", n=2, out=place.out), ("eps", "nan"))
api(
    "attack-samples-seed-beyond-64-bits",
    lambda place: bindguard.attack_samples(seed=2**70, n=2, out=place.out),
    ("seed",),
)
api(
    "attack-samples-modality-unknown",
    lambda place: bindguard.attack_samples(modality="smell", out=place.out),
    ("smell",),
)
api(
    "certify-samples-alpha-nan",
    lambda place: bindguard.certify_samples("tinybind", place.shared.noisy, alpha=NAN),
    ("alpha", "nan"),
)
api(
    "certify-samples-draws-too-few",
    lambda place: bindguard.certify_samples("tinybind", place.shared.noisy, draws=2),
    ("draws",),
)
api(
    "create-attack-unknown",
    lambda place: bindguard.create_attack("magic", threat=bindguard.ThreatModel.linf("4/255")),
    ("magic",),
)
api("threat-model-eps-nan", lambda place: bindguard.ThreatModel.linf(NAN), ("eps", "nan"))
api("threat-model-norm-l3", lambda place: bindguard.ThreatModel("l3", 0.1), ("l3",))


# ---------------------------------------------------------------------------------------------------------------------
# The corpus


@pytest.fixture
def place(tmp_path: Path, shared: Shared, monkeypatch: pytest.MonkeyPatch) -> Place:
    monkeypatch.chdir(tmp_path)  # a file written to the working folder is caught by the snapshot too
    return Place(tmp_path, shared)


class Filled:
    """The case's {placeholders} as attributes (``place.data``) for API calls."""

    def __init__(self, place: Place, extra: dict[str, Path]):
        self._place, self._extra = place, extra

    def __getattr__(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        return getattr(self._place, name)


def _prepared(place: Place, prepare: Callable | None) -> dict[str, Path]:
    return dict(prepare(place) or {}) if prepare is not None else {}


def _changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    added = [f"+{path}" for path in sorted(set(after) - set(before))]
    removed = [f"-{path}" for path in sorted(set(before) - set(after))]
    changed = [f"~{path}" for path in sorted(set(before) & set(after)) if before[path] != after[path]]
    return added + removed + changed


def cli_problem(result: Any, names: tuple[str, ...], changes: list[str]) -> str | None:
    """The first promise a CLI run broke, as one line with what was seen; None when it kept them all."""
    stderr = " | ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    if unexpected is not None:
        frame = traceback.extract_tb(result.exc_info[2])[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return f"traceback: {type(unexpected).__name__} at {where}: {' '.join(str(unexpected).split())[:300]}"
    if result.exit_code != 2:
        return f"exit code {result.exit_code}, not 2; stderr: {stderr[:300]!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].startswith("error:"):
        return f"{len(lines)} stderr lines, not one 'error:' line: {stderr[:400]!r}"
    if "Traceback" in result.output:
        return f"a traceback was printed: {result.output[:300]!r}"
    missing = names_in(lines[0], names)
    if missing:
        return f"the line does not name {missing}: {lines[0]!r}"
    if result.stdout.strip():
        return f"a refused command printed to stdout: {result.stdout.strip()[:200]!r}"
    if changes:
        return f"files written or changed: {changes[:4]}; line: {lines[0]!r}"
    return None


@pytest.mark.parametrize("case_id", sorted(CLI))
def test_bad_cli_input_is_refused_in_one_line(case_id: str, place: Place) -> None:
    case = CLI[case_id]
    extra = _prepared(place, case.prepare)
    args = [place.fill(arg, **extra) for arg in case.args]
    names = tuple(place.fill(name, **extra) for name in case.names)
    before = snapshot(place.root, place.shared.root)
    try:
        with deadline(CASE_SECONDS):
            result = runner.invoke(app, args, prog_name="bindguard")
    except TooSlow as error:
        pytest.fail(str(error))
    problem = cli_problem(result, names, _changes(before, snapshot(place.root, place.shared.root)))
    assert problem is None, f"{problem}\n(bindguard {' '.join(args)})"


@pytest.mark.parametrize("case_id", sorted(API))
def test_bad_api_input_raises_one_line_error(case_id: str, place: Place) -> None:
    case = API[case_id]
    extra = _prepared(place, case.prepare)
    names = tuple(place.fill(name, **extra) for name in case.names)
    before = snapshot(place.root, place.shared.root)
    error: BaseException | None = None
    try:
        with deadline(CASE_SECONDS):
            case.call(Filled(place, extra))
    except BindguardError as raised:
        error = raised
    except TooSlow as raised:
        pytest.fail(str(raised))
    except Exception as raised:  # noqa: BLE001 (the point: anything but a BindguardError is a failure)
        frame = traceback.extract_tb(raised.__traceback__)[-1]
        text = " ".join(str(raised).split())[:300]
        pytest.fail(
            f"{type(raised).__name__} (not a BindguardError) at {Path(frame.filename).name}:{frame.lineno}: {text}"
        )
    assert error is not None, "the bad input was accepted"
    message = str(error)
    assert message.strip() and "\n" not in message.strip(), f"not one line: {message!r}"
    assert not names_in(message, names), f"the message does not name {names_in(message, names)}: {message!r}"
    changes = _changes(before, snapshot(place.root, place.shared.root))
    assert not changes, f"files written or changed: {changes[:4]}; message: {message!r}"


def test_corpus_is_large_and_covers_every_command() -> None:
    assert len(CLI) + len(API) >= 100
    commands = {case.args[0] for case in CLI.values()}
    assert {"eval", "attack", "calibrate", "certify", "report", "demo"} <= commands


# ---------------------------------------------------------------------------------------------------------------------
# Good inputs beside the bad ones: accepted, so the cases above fail for their own reasons


def test_pristine_fixtures_are_accepted(shared: Shared, tmp_path: Path) -> None:
    assert read_results(shared.results, typed=True)["rows"]
    assert len(Results.read(shared.results).calibration) == 1
    benchmark = bindguard.load_dataset(str(shared.data), modalities=["image"])
    assert benchmark.class_names == ("cat", "dog")
    assert bindguard.create_encoder("tinybind", calibration=shared.calibration).name == "tinybind"
    summary = bindguard.certify_samples("tinybind", shared.noisy, str(shared.data), n=2, draws=8)
    assert summary["n"] == 2
    resaved = _weights()(Place(tmp_path, shared))["weights"]  # what the weights cases spoil, unspoiled
    assert bindguard.create_encoder("tinybind", weights=resaved).name == "tinybind"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_precisions_are_accepted_by_casting(dtype: torch.dtype, tmp_path: Path) -> None:
    path = _save(tmp_path / "data.safetensors", image=good_tensors()["image"].to(dtype))
    args = ["eval", "--data", str(path), "--out", str(tmp_path / "out"), "--n", "2", "--modalities", "image", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert rows[0]["modality"] == "image" and rows[0]["n"] == 2


def test_results_provenance_round_trips_and_old_files_load(tmp_path: Path, shared: Shared) -> None:
    results = Results.read(shared.results)
    results.provenance = {"command": "bindguard eval", "data_sha256": "ab" * 8}
    results.write(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["provenance"] == results.provenance
    assert Results.read(tmp_path).provenance == results.provenance
    old = json.loads((tmp_path / "results.json").read_text())
    del old["provenance"]
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert Results.read(tmp_path).provenance == {}


# ---------------------------------------------------------------------------------------------------------------------
# parse_templates and parse_class_names: properties over arbitrary input

_PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=12)
_MODALITIES = st.sampled_from(["image", "video", "audio", "point", "depth", "thermal"])


@given(st.dictionaries(_MODALITIES, st.lists(st.tuples(_PLAIN, _PLAIN), min_size=1, max_size=4), min_size=1))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_templates_with_one_placeholder_each_are_kept_in_order(given_parts: dict) -> None:
    text = {modality: [before + "{}" + after for before, after in parts] for modality, parts in given_parts.items()}
    parsed = parse_templates(json.dumps(text))
    assert {modality.value: list(prompts) for modality, prompts in parsed.items()} == text
    for modality, parts in given_parts.items():
        filled = [prompt.format("cat") for prompt in parsed[bindguard.Modality(modality)]]
        assert filled == [before + "cat" + after for before, after in parts]


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None, database=None)
def test_any_template_text_is_accepted_only_when_it_holds_one_plain_placeholder(prompt: str) -> None:
    try:
        parsed = parse_templates(json.dumps({"image": [prompt]}))
    except DataError as error:
        assert "\n" not in str(error).strip() and "templates" in str(error)
        return
    (kept,) = parsed.values()
    fields = [name for _, name, _, _ in string.Formatter().parse(kept[0]) if name is not None]
    assert fields == [""] and kept[0].format("x") == kept[0].replace("{}", "x", 1).replace("{{", "{").replace("}}", "}")


@given(
    st.one_of(
        st.text(max_size=40),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ).map(json.dumps),
    )
)
@settings(max_examples=300, deadline=None, database=None)
def test_any_metadata_text_parses_or_raises_one_line_data_error(text: str) -> None:
    for parse in (parse_templates, parse_class_names):
        try:
            parse(text, source="f.safetensors: metadata")
        except DataError as error:
            assert "\n" not in str(error).strip() and str(error).startswith("f.safetensors: metadata")


@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
@settings(max_examples=150, deadline=None, database=None)
def test_class_names_are_accepted_exactly_when_distinct_and_non_blank(names: list[str]) -> None:
    valid = all(name.strip() for name in names) and len(set(names)) == len(names)
    try:
        assert parse_class_names(json.dumps(names)) == names and valid
    except DataError:
        assert not valid
