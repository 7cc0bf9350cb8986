"""Event recordings read from files: N-Caltech101 / N-MNIST binary files and plain NumPy event lists.

File formats (one recording a file; ``read_recording`` picks the reader by suffix):

- ``.bin``, N-MNIST and N-Caltech101 (Orchard et al. 2015): 5 bytes an event, big-endian: byte 0
  is x, byte 1 is y, bit 7 of byte 2 the polarity (1 ON, 0 OFF), and the other 23 bits (byte 2
  bits 0-6, bytes 3 and 4) the timestamp in microseconds. As in the data sets' reference reader
  (``eventvision.py``), a row with y = 240 marks a timestamp overflow, not an event: it is dropped
  and the later events' times advance by 2**13.
- ``.npy``: a structured array with fields ``x, y, t, p``, or an (N, 4) array with columns x, y,
  t, p.
- ``.npz``: arrays ``x, y, t, p``, and optionally the sensor size as ``sensor_size`` (height,
  width) or as ``height`` and ``width``.

Coordinates are whole pixels from the sensor's top-left corner; polarities are True/1 for ON and
False/0/-1 for OFF. Each recording becomes its (T, 2, H, W) tensor at the encoder's event input
size by ``modalities.event.events_to_tensor`` (centre crop of the sensor, tent-weighted time bins,
density scaling).

Data sets:

- ``ncaltech101``: the published ``Caltech101/`` folder of class folders of ``.bin`` files
  (``ROOT/CLASS/*.bin``, or ``ROOT/Caltech101/CLASS/*.bin`` as the archive extracts). The clutter
  folder ``BACKGROUND_Google`` is not a class. N-Caltech101 publishes no split, so one is fixed
  here: per class, in file name order, every ``TEST_EVERY``-th recording from the first (the 1st,
  6th, 11th...) is the test split and the rest the train split. Sensor: the ATIS is 304 x 240, but
  each Caltech101 image was scaled to fit 240 x 180 on the monitor it was recorded from, so the
  recordings span at most 240 x 180 (width x height); every recording is read on that fixed
  sensor, so a sample's scale is the image's, and an event beyond it is refused.
- ``event-folders``: class folders of recordings in any of the formats above, with the layout and
  split rule of the other ``*-folders`` data sets (``data.folders``). The sensor size is the
  ``.npz`` file's own if it has one, else the loader's ``sensor_size``, else each recording's
  largest coordinates + 1 (then a sample fills the tensor whatever the camera).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bindguard._types import Modality
from bindguard.data.files import (
    LabelledFiles,
    Source,
    check_root,
    check_split,
    class_name,
    loader,
    shape_of,
    templates_for,
)
from bindguard.data.folders import list_class_folders, split_folder
from bindguard.errors import ConfigError, DataError
from bindguard.modalities.event import events_to_tensor

EXTENSIONS = (".bin", ".npy", ".npz")
#: (T, 2, H, W) when the encoder asks for none: TinyBind's event input.
DEFAULT_SHAPE = (4, 2, 32, 32)
EVENT_BYTES = 5
OVERFLOW_ROW = 240  # y of a timestamp-overflow marker in a .bin file
OVERFLOW_STEP = 2**13  # microseconds added after each marker, as the reference reader does
NCALTECH101_SENSOR = (180, 240)  # (height, width): the area its images were shown in
NCALTECH101_FOLDER = "Caltech101"
NCALTECH101_BACKGROUND = "BACKGROUND_Google"
#: Caltech101 folders whose names read badly in a prompt (as CLIP's Caltech101 class names have them).
NCALTECH101_NAMES = {"Faces_easy": "face", "Leopards": "leopard", "Motorbikes": "motorbike", "airplanes": "airplane"}
TEST_EVERY = 5
_FIX = "fix: replace or remove the file, or pass --skip-bad-files to leave such files out"


@dataclass(frozen=True)
class Recording:
    """One recording's events, equal-length 1-D arrays, and the sensor's (height, width) if the file says it."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    sensor_size: tuple[int, int] | None = None


def read_bin(path: Path) -> Recording:
    """An N-MNIST / N-Caltech101 ``.bin`` file's events (see the module docstring for the bit layout).

    Raises:
        DataError: naming the file, when it cannot be read, is not whole 5-byte events, or holds none.
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read as an event file ({error}); {_FIX}") from error
    if raw.size % EVENT_BYTES:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {EVENT_BYTES}-byte events (truncated, or not an "
            f"N-MNIST/N-Caltech101 .bin file); {_FIX}"
        )
    events = raw.reshape(-1, EVENT_BYTES).astype(np.int64)  # (N, 5)
    x, y = events[:, 0], events[:, 1]
    p = events[:, 2] >> 7
    t = ((events[:, 2] & 0x7F) << 16) | (events[:, 3] << 8) | events[:, 4]
    overflow = y == OVERFLOW_ROW
    t = t + OVERFLOW_STEP * np.cumsum(overflow)
    keep = ~overflow
    return _checked(path, x[keep], y[keep], t[keep], p[keep])


def read_numpy(path: Path) -> Recording:
    """A ``.npy`` or ``.npz`` file's events (see the module docstring for the layouts).

    Raises:
        DataError: naming the file, when it cannot be read or lacks x, y, t and p.
    """
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:  # its arrays are read (and may fail) on access
                return _from_npz(path, loaded)
    except unreadable as error:
        raise DataError(f"{path}: cannot be read as NumPy events ({error}); {_FIX}") from error
    if loaded.dtype.names is not None:
        missing = [field for field in "xytp" if field not in loaded.dtype.names]
        if missing:
            raise DataError(f"{path}: the structured array lacks the field(s) {', '.join(missing)}; {_FIX}")
        return _checked(path, *(loaded[field].reshape(-1) for field in "xytp"))
    if loaded.ndim != 2 or loaded.shape[1] != 4:
        raise DataError(
            f"{path}: an event array is (N, 4) with columns x, y, t, p, or structured with those fields; "
            f"got shape {loaded.shape}; {_FIX}"
        )
    return _checked(path, *loaded.T)


def _from_npz(path: Path, loaded: np.lib.npyio.NpzFile) -> Recording:
    missing = [name for name in "xytp" if name not in loaded.files]
    if missing:
        raise DataError(f"{path}: the archive lacks the array(s) {', '.join(missing)} (it needs x, y, t, p); {_FIX}")
    recording = _checked(path, *(loaded[name].reshape(-1) for name in "xytp"))
    if "sensor_size" in loaded.files:
        size = loaded["sensor_size"].reshape(-1).tolist()
    elif "height" in loaded.files and "width" in loaded.files:
        size = [*loaded["height"].reshape(-1).tolist(), *loaded["width"].reshape(-1).tolist()]
    else:
        return recording
    if len(size) != 2 or not all(float(v).is_integer() and v > 0 for v in size):
        raise DataError(f"{path}: the sensor size must be two positive whole numbers (height, width), got {size}")
    return Recording(recording.x, recording.y, recording.t, recording.p, (int(size[0]), int(size[1])))


def _checked(path: Path, x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> Recording:
    """Equal-length numeric lists with whole, finite coordinates and finite times, at least one event."""
    arrays = {"x": np.asarray(x), "y": np.asarray(y), "t": np.asarray(t), "p": np.asarray(p)}
    lengths = {name: value.size for name, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{path}: x, y, t and p have different lengths {lengths}; {_FIX}")
    for name, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: {name} must be numbers, got {value.dtype}; {_FIX}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise DataError(f"{path}: {name} holds NaN or infinite values; {_FIX}")
    if not lengths["x"]:
        raise DataError(f"{path} holds no events; an event recording needs at least one; {_FIX}")
    for name in "xy":
        if arrays[name].dtype.kind == "f" and not np.equal(np.floor(arrays[name]), arrays[name]).all():
            raise DataError(f"{path}: {name} must be whole pixel coordinates; {_FIX}")
    x, y = arrays["x"].astype(np.int64), arrays["y"].astype(np.int64)
    t = arrays["t"].astype(np.float64 if arrays["t"].dtype.kind == "f" else np.int64)
    return Recording(x, y, t, arrays["p"].astype(np.int64 if arrays["p"].dtype.kind != "f" else np.float64))


def read_recording(path: Path) -> Recording:
    """A recording by its suffix: ``.bin``, ``.npy`` or ``.npz``."""
    if path.suffix.lower() == ".bin":
        return read_bin(path)
    if path.suffix.lower() in (".npy", ".npz"):
        return read_numpy(path)
    raise DataError(f"{path}: not an event file; allowed: {', '.join(EXTENSIONS)}")


def decode_recording(path: Path, *, shape: Sequence[int], sensor_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(T, 2, H, W) event densities in [0, 1] of one file: its own sensor size, else ``sensor_size``,
    else its largest coordinates + 1."""
    recording = read_recording(path)
    size = recording.sensor_size or sensor_size
    if size is None:
        size = (max(int(recording.y.max()) + 1, 1), max(int(recording.x.max()) + 1, 1))
    bins, _, height, width = shape
    return _tensor(recording, path, size, bins, height, width)


def decode_ncaltech101(path: Path, *, shape: Sequence[int]) -> torch.Tensor:
    """(T, 2, H, W) event densities in [0, 1] of one N-Caltech101 file, on its fixed 240 x 180 sensor."""
    recording = read_bin(path)
    height, width = NCALTECH101_SENSOR
    if int(recording.x.max()) >= width or int(recording.y.max()) >= height:
        raise DataError(
            f"{path}: events reach x {int(recording.x.max())}, y {int(recording.y.max())}, beyond N-Caltech101's "
            f"{width} x {height} recordings; is it from another data set? read such files with --data event-folders"
        )
    bins, _, tensor_height, tensor_width = shape
    return _tensor(recording, path, NCALTECH101_SENSOR, bins, tensor_height, tensor_width)


def _tensor(
    recording: Recording, path: Path, size: tuple[int, int], bins: int, height: int, width: int
) -> torch.Tensor:
    x, y, t, p = (torch.from_numpy(value) for value in (recording.x, recording.y, recording.t, recording.p))
    return events_to_tensor(x, y, t, p, sensor_size=size, bins=bins, height=height, width=width, source=str(path))


def _event_shape(shapes: dict | None) -> tuple[int, ...]:
    shape = shape_of(shapes, Modality.EVENT, DEFAULT_SHAPE)
    if len(shape) != 4 or shape[1] != 2:
        raise ConfigError(f"an event input is (T, 2, H, W), got {shape}; see modalities.event.event_spec")
    return shape


def _check_wanted(modalities: Sequence[Modality] | None, name: str) -> None:
    if modalities is not None and Modality.EVENT not in [Modality.parse(m) for m in modalities]:
        raise DataError(f"data set {name!r} holds event recordings only; fix: --modalities event")


def _check_sensor_size(sensor_size: Sequence[int] | None) -> tuple[int, int] | None:
    if sensor_size is None:
        return None
    size = list(sensor_size) if isinstance(sensor_size, (list, tuple)) else [sensor_size]
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size):
        raise ConfigError(f"sensor_size is (height, width) in pixels, two positive integers; got {sensor_size!r}")
    return int(size[0]), int(size[1])


def list_ncaltech101(root: Path, split: str) -> LabelledFiles:
    """The split's ``.bin`` recordings: per class in name order, every ``TEST_EVERY``-th from the first is test."""
    folder = root / NCALTECH101_FOLDER if (root / NCALTECH101_FOLDER).is_dir() else root
    classes = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != NCALTECH101_BACKGROUND
    )
    if not classes:
        raise DataError(f"{folder} has no class folders; expected ROOT/CLASS/*.bin (N-Caltech101's Caltech101/ folder)")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() == ".bin")
        if not found:
            raise DataError(f"class folder {folder / name} has no .bin files; fix: add its files or remove it")
        chosen = [path for index, path in enumerate(found) if (index % TEST_EVERY == 0) == (split == "test")]
        files += chosen
        labels += [label] * len(chosen)
    names = tuple(NCALTECH101_NAMES.get(c, class_name(c)) for c in classes)
    return LabelledFiles(files, labels, names)


def ncaltech101_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    """N-Caltech101's ``.bin`` recordings, each decoded on its 240 x 180 sensor to the encoder's event size."""
    root = check_root(data_root, "ncaltech101")
    listed = list_ncaltech101(root, check_split(split))
    _check_wanted(modalities, "ncaltech101")
    shape = _event_shape(shapes)
    settings = {"shape": list(shape), "sensor_size": list(NCALTECH101_SENSOR), "test_every": TEST_EVERY}
    decode = partial(decode_ncaltech101, shape=shape)
    return Source(
        "ncaltech101", split, Modality.EVENT, listed, decode, settings, templates_for(Modality.EVENT, templates)
    )


load_ncaltech101 = loader(ncaltech101_source)


def event_folder_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
    sensor_size: Sequence[int] | None = None,
) -> Source:
    """Class folders of event recordings (``.bin``, ``.npy``, ``.npz``), each decoded to the encoder's event size.

    Args:
        sensor_size: (height, width) of the sensor for files that do not give theirs; by default
            each recording's largest coordinates + 1.
    """
    root = check_root(data_root, "event-folders")
    listed = list_class_folders(split_folder(root, split), EXTENSIONS)
    _check_wanted(modalities, "event-folders")
    shape = _event_shape(shapes)
    size = _check_sensor_size(sensor_size)
    settings = {"shape": list(shape), "sensor_size": "per recording" if size is None else list(size)}
    decode = partial(decode_recording, shape=shape, sensor_size=size)
    return Source(
        "event-folders", split, Modality.EVENT, listed, decode, settings, templates_for(Modality.EVENT, templates)
    )


load_event_folders = loader(event_folder_source)
