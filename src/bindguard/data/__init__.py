"""Data sets that yield raw-domain batches, by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.errors import ConfigError, DataError
from bindguard.registry import Registry

DATASETS: Registry[Benchmark] = Registry("data set", "bindguard data list")
DATASETS.register(
    "builtin",
    "bindguard.data.builtin.benchmark:load_builtin",
    description="ten digits in image, video, audio, point, depth, thermal (scikit-learn glyphs, espeak-ng voices)",
)
# Data sets read from the user's files (--data-root PATH), in the layouts they are published in.
_FOLDERS = "ROOT/[train|test|val/]CLASS/"
for _name, _target, _description, _extra in (
    ("image-folders", "folders:load_image_folders", f"image: ImageNet-style class folders, {_FOLDERS}*.jpg|png", None),
    (
        "thermal-folders",
        "folders:load_thermal_folders",
        f"thermal: LLVIP-style infrared images, {_FOLDERS}*.jpg|png",
        None,
    ),
    ("depth-folders", "folders:load_depth_folders", f"depth: NYU-D/SUN-D 16-bit PNG depth (mm), {_FOLDERS}*.png", None),
    ("audio-folders", "folders:load_audio_folders", f"audio: class folders of sound files, {_FOLDERS}*.wav|flac", None),
    (
        "video-folders",
        "folders:load_video_folders",
        f"video: UCF-101/Kinetics class folders, {_FOLDERS}*.mp4|avi",
        "data",
    ),
    ("esc50", "esc50:load_esc50", "audio: ESC-50, ROOT/meta/esc50.csv + ROOT/audio/*.wav; test = fold 5", None),
    ("modelnet40", "modelnet:load_modelnet40", "point: ModelNet40 meshes, ROOT/CLASS/train|test/*.off", None),
    ("modelnet40-h5", "modelnet:load_modelnet40_h5", "point: ModelNet40 HDF5 export, ROOT/ply_data_*.h5", "data"),
):
    DATASETS.register(_name, f"bindguard.data.{_target}", description=_description, extra=_extra)


def check_data_source(name: object) -> str:
    """A registered data set name or a path to a ``.safetensors`` data file, checked cheaply (nothing is read).

    Raises:
        ConfigError: for something that is not text or a path.
        DataError: for a folder or a file of another kind.
        UnknownNameError: for an unknown name, with the closest known one.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ConfigError(f"data is named by text or a path, got {name!r}; see bindguard data list")
    if name.endswith(".safetensors") or name in DATASETS.names():
        return name
    if Path(name).is_dir():
        raise DataError(
            f"--data {name} is a folder; give a .safetensors data file (see 'User data' in the README) "
            "or a data set name (bindguard data list)"
        )
    if Path(name).exists():
        raise DataError(
            f"--data {name} is not a .safetensors file; convert it to the layout in 'User data' in the README, "
            "or give a data set name (bindguard data list)"
        )
    DATASETS.get(name)
    return name


def load_dataset(name: str | os.PathLike, /, **options: Any) -> Benchmark:
    """Load a registered data set by name (``load_dataset("builtin", split="test")``) or a user file.

    Options go to the data set's loader: for ``"builtin"`` see ``load_builtin``, including
    ``shapes`` and ``sample_rate`` to render at an encoder's input sizes
    (``load_dataset("builtin", shapes={Modality.IMAGE: (3, 224, 224)}, sample_rate=48_000)``).
    A name ending in ``.safetensors`` is read as a user data file (see ``data.tensor_file``); its
    tensors have the sizes they were saved with, so ``shapes`` and ``sample_rate`` are ignored.
    """
    name = check_data_source(name)
    if name.endswith(".safetensors"):
        from bindguard.data.tensor_file import load_tensor_file

        options.pop("split", None)
        return load_tensor_file(Path(name), **options)
    return DATASETS.create(name, **options)


__all__ = ["DATASETS", "Benchmark", "ModalityData", "check_data_source", "load_dataset"]
