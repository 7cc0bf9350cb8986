"""User data as one safetensors file: raw inputs per modality, integer labels, class names.

Layout: a tensor ``<modality>`` (B, ...) in the encoder's raw layout and domain, and a tensor
``<modality>.labels`` (B,) of class indices, for each modality; metadata ``class_names`` (a JSON
list) and optionally ``templates`` (a JSON object: modality -> list of "... {} ..." prompts).

Everything the file itself can get wrong (its header, dtypes, the batch axis, labels, metadata)
is checked when it is loaded, each error naming the file and the tensor or key; given an encoder's
``input_shapes``, so are the sample shapes. The inputs are read batch by batch
(``data.rows.FileRows``), so a file larger than memory can be evaluated; NaN and Inf (and, given
``domains``, values outside the domain) are refused in the batch that holds them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import string
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from bindguard._checks import check_count
from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.data.rows import FileRows, first_rows
from bindguard.errors import DataError, UnknownNameError

DEFAULT_TEMPLATES = ("a {}.", "a photo of a {}.", "an example of {}.")
FORMAT_HINT = "see 'User data' in the README for the expected layout"
HEADER_LIMIT = 100_000_000  # safetensors' own cap on the JSON header
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def load_tensor_file(
    path: Path,
    *,
    modalities: list[Modality | str] | tuple[Modality | str, ...] = PERCEPTUAL_MODALITIES,
    limit: int | None = None,
    shapes: object = None,
    sample_rate: object = None,
    input_shapes: Mapping[Modality, tuple[int, ...]] | None = None,
    domains: Mapping[Modality, tuple[float, float]] | None = None,
    **_: object,
) -> Benchmark:
    """Load a user data file into a ``Benchmark`` with one split (``"test"``).

    ``shapes`` and ``sample_rate`` (the built-in benchmark's rendering sizes) are accepted and
    ignored: a file's tensors already have their sizes. To have them checked here, against what
    an encoder takes, give ``input_shapes`` and ``domains`` (its ``input_spec(m).shape`` and
    ``.domain``); without them the encoder's spec checks each batch when it is encoded.

    Args:
        path: the ``.safetensors`` file.
        modalities: the modalities to load; the file's other tensors are not read.
        limit: at most this many samples per modality.
        input_shapes: each modality's per-sample shape (no batch axis); a tensor of another shape
            is refused at once, naming the file, the tensor and both shapes.
        domains: each modality's valid (low, high) range; values outside it are refused, naming
            the file, when the batch holding them is read.

    Raises:
        DataError: for a missing, unreadable, corrupt or malformed file, inputs that are not
            floating point or have no batch axis, labels that do not match the inputs, bad
            metadata, or a selection with no data.
        ConfigError: for a non-positive limit.
    """
    path = Path(path)
    check_count("limit", limit, 1, optional=True)
    modalities = [Modality.parse(modality) for modality in modalities]
    check_readable(path)
    check_header(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())  # noqa: SIM118 (safe_open is not iterable)
            views = {key: (handle.get_slice(key).get_dtype(), handle.get_slice(key).get_shape()) for key in keys}
            # labels are small and read now; inputs stay in the file until a batch asks for them
            labels_of = {key: handle.get_tensor(key) for key in keys if key.endswith(".labels")}
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"data file {path} is corrupt or not safetensors ({_one_line(error)})") from None
    class_names = parse_class_names(metadata.get("class_names"), source=f"{path}: metadata")
    templates_given = (
        parse_templates(metadata["templates"], source=f"{path}: metadata") if "templates" in metadata else {}
    )
    data: dict[Modality, ModalityData] = {}
    for modality in modalities:
        key = modality.value
        if key not in views:
            if f"{key}.labels" in views:
                raise DataError(f"{path} has '{key}.labels' but no {key!r} tensor of inputs; store both")
            continue
        _check_inputs(path, key, *views[key])
        expected = None if input_shapes is None else input_shapes.get(modality)
        if expected is not None and tuple(views[key][1][1:]) != tuple(expected):
            want = "(B, " + ", ".join(map(str, expected)) + ")"
            raise DataError(
                f"{path}: {key!r} has shape {tuple(views[key][1])}; the encoder takes {key} inputs of shape {want}; "
                "fix: resize the inputs and save the file again"
            )
        domain = None if domains is None else domains.get(modality)
        inputs = FileRows(path, key, domain=domain)
        labels = _checked_labels(path, key, labels_of.get(f"{key}.labels"), len(inputs), len(class_names))
        if limit is not None:
            inputs, labels = first_rows(inputs, limit), labels[:limit]
        if len(inputs) == 0:
            raise DataError(f"{path}: {key!r} holds no samples; store at least one")
        data[modality] = ModalityData(inputs, labels, torch.arange(inputs.shape[0]), "file")
    if not data:
        found = ", ".join(sorted(key for key in views if not key.endswith(".labels"))) or "none"
        wanted = ", ".join(m.value for m in modalities)
        raise DataError(f"{path} holds no data for the chosen modalities ({wanted}); it has: {found}")
    templates = {m: templates_given.get(m, DEFAULT_TEMPLATES) for m in data}
    return Benchmark(path.stem, "test", tuple(class_names), templates, data)


def check_readable(path: Path) -> None:
    """Refuse, with the reason, a path that is not a regular file this process can read.

    Raises:
        DataError: for a missing path, a broken symlink, a symlink loop, a folder, a device or
            pipe, or a file without read permission.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(
                f"data file {path} is a symlink to {os.readlink(path)}, which does not exist; fix the link"
            ) from None
        raise DataError(
            f"data file {path} not found; give a .safetensors file or a data set name (bindguard data list)"
        ) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(f"data file {path} is a symlink loop; give the real file") from None
        raise DataError(f"data file {path} cannot be opened ({error.strerror}); check the path") from None
    if stat.S_ISDIR(status.st_mode):
        raise DataError(f"data file {path} is a folder; give the .safetensors file inside it ({FORMAT_HINT})")
    if not stat.S_ISREG(status.st_mode):
        raise DataError(f"data file {path} is not a regular file; give a .safetensors file")
    if not os.access(path, os.R_OK):
        raise DataError(f"data file {path} cannot be read (no read permission); fix: chmod u+r {path}")


def check_header(path: Path) -> None:
    """Check the file's framing (8-byte length, JSON header, data offsets) before safetensors reads it.

    Raises:
        DataError: naming what is wrong, for an empty, truncated or otherwise corrupt file.
    """
    size = path.stat().st_size
    prefix = "data file " + str(path)
    if size < 8:
        raise DataError(f"{prefix} is {'empty' if size == 0 else 'truncated'} ({size} bytes); {FORMAT_HINT}")
    with open(path, "rb") as stream:
        length = int.from_bytes(stream.read(8), "little")
        if length > HEADER_LIMIT:
            raise DataError(
                f"{prefix} is not a safetensors file (it does not start with a header length); {FORMAT_HINT}"
            )
        if length > size - 8:
            raise DataError(
                f"{prefix} is truncated or not safetensors: its header claims {length} bytes, "
                f"the file has {size - 8} after the length; {FORMAT_HINT}"
            )
        raw = stream.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{prefix} is corrupt or not safetensors: its header is not JSON; {FORMAT_HINT}") from None
    if not isinstance(header, dict):
        raise DataError(f"{prefix} is corrupt: its header is not a JSON object; {FORMAT_HINT}")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise DataError(f"{prefix} is corrupt: tensor {key!r} has no valid data_offsets; {FORMAT_HINT}")
        end = max(end, offsets[1])
    if 8 + length + end > size:
        raise DataError(f"{prefix} is truncated: its tensors need {8 + length + end} bytes, the file has {size}")


def parse_class_names(text: str | None, *, source: str = "metadata") -> list[str]:
    """The ``class_names`` metadata: a JSON list of distinct, non-empty strings.

    Raises:
        DataError: naming ``source`` and the problem.
    """
    fix = 'e.g. class_names = json.dumps(["cat", "dog"])'
    if text is None:
        raise DataError(f"{source} has no 'class_names'; add it ({fix}); {FORMAT_HINT}")
    try:
        names = json.loads(text)
    except ValueError as error:
        raise DataError(f"{source} 'class_names' is not valid JSON ({_one_line(error)}); {fix}") from None
    if not isinstance(names, list) or not names:
        raise DataError(f"{source} 'class_names' must be a non-empty JSON list of strings, got {_shown(names)}; {fix}")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{source} 'class_names'[{index}] must be a non-empty string, got {_shown(name)}; {fix}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{source} 'class_names' repeats {_shown(duplicates[0])}; each class needs its own name")
    return names


def parse_templates(text: str, *, source: str = "metadata") -> dict[Modality, tuple[str, ...]]:
    """The ``templates`` metadata: a JSON object from modality to a non-empty list of prompts,
    each with exactly one ``{}`` where the class name goes (``{{`` and ``}}`` are literal braces).

    Example::

        parse_templates('{"image": ["a photo of a {}.", "a {} in {{braces}}"]}')

    Raises:
        DataError: naming ``source``, the modality and the template that is wrong.
    """
    fix = 'e.g. templates = json.dumps({"image": ["a photo of a {}."]})'
    try:
        given = json.loads(text) if isinstance(text, str) else text
    except ValueError as error:
        raise DataError(f"{source} 'templates' is not valid JSON ({_one_line(error)}); {fix}") from None
    if not isinstance(given, dict):
        raise DataError(f"{source} 'templates' must be a JSON object (modality -> prompts), got {_shown(given)}; {fix}")
    templates: dict[Modality, tuple[str, ...]] = {}
    for key, prompts in given.items():
        try:
            modality = Modality.parse(key)
        except UnknownNameError:
            modality = None
        if modality is None or modality is Modality.TEXT:
            allowed = ", ".join(m.value for m in PERCEPTUAL_MODALITIES)
            raise DataError(f"{source} 'templates' has key {_shown(key)}, which is no modality; allowed: {allowed}")
        if not isinstance(prompts, list) or not prompts:
            raise DataError(
                f"{source} 'templates'[{key!r}] must be a non-empty list of prompts, got {_shown(prompts)}; {fix}"
            )
        for prompt in prompts:
            _check_template(prompt, f"{source} 'templates'[{key!r}]", fix)
        templates[modality] = tuple(prompts)
    return templates


def _check_template(prompt: object, where: str, fix: str) -> None:
    if not isinstance(prompt, str):
        raise DataError(f"{where} holds {_shown(prompt)}, not a string; {fix}")
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(prompt)
            if name is not None
        ]
    except ValueError as error:  # a lone "{" or "}"
        raise DataError(
            f"{where}: template {_shown(prompt)} has unbalanced braces ({error}); write {{{{ and }}}} for literal braces"
        ) from None
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise DataError(
            f"{where}: template {_shown(prompt)} holds {len(fields)} replacement field(s); it needs exactly one "
            f"plain {{}} (no name, index, conversion or format) where the class name goes; {fix}"
        )


def _check_inputs(path: Path, key: str, dtype: str, shape: list[int]) -> None:
    if dtype not in FLOAT_DTYPES:
        raise DataError(
            f"{path}: {key!r} has dtype {dtype}; store the inputs as floating point (float32, float16 or float64) "
            "in the encoder's domain, e.g. images in [0, 1]"
        )
    if len(shape) < 2:
        raise DataError(
            f"{path}: {key!r} has shape {tuple(shape)}; inputs need a batch axis and a sample shape, (B, ...) "
            f"in the encoder's layout; {FORMAT_HINT}"
        )


def _checked_labels(path: Path, key: str, labels: torch.Tensor | None, count: int, classes: int) -> torch.Tensor:
    name = f"{key}.labels"
    if labels is None:
        raise DataError(f"{path}: {key!r} has no {name!r} tensor; add (B,) integer class indices")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"{path}: {name!r} has dtype {labels.dtype}; store integer class indices, e.g. torch.long")
    if labels.dim() != 1 or labels.shape[0] != count:
        raise DataError(f"{path}: {name!r} must have shape ({count},), one label per sample, got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataError(
            f"{path}: {name!r} holds {bad}, outside 0..{classes - 1} (the {classes} entries of class_names)"
        )
    return labels.long()


def _shown(value: object, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
