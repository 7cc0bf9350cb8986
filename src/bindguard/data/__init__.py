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
    ("imagenet-val", "imagenet:load_imagenet_val", "image: ImageNet val, ROOT/LOC_val_solution.csv + val/*.JPEG", None),
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
    ("msrvtt", "msrvtt:load_msrvtt", "video + captions: MSR-VTT, ROOT/videos/*.mp4 + *videodatainfo.json", "data"),
    (
        "clotho",
        "clotho:load_clotho",
        "audio + captions: Clotho, ROOT/clotho_captions_*.csv + ROOT/evaluation/*.wav",
        None,
    ),
    ("esc50", "esc50:load_esc50", "audio: ESC-50, ROOT/meta/esc50.csv + ROOT/audio/*.wav; test = fold 5", None),
    ("modelnet40", "modelnet:load_modelnet40", "point: ModelNet40 meshes, ROOT/CLASS/train|test/*.off", None),
    ("modelnet40-h5", "modelnet:load_modelnet40_h5", "point: ModelNet40 HDF5 export, ROOT/ply_data_*.h5", "data"),
    (
        "ncaltech101",
        "events:load_ncaltech101",
        "event: N-Caltech101, ROOT/[Caltech101/]CLASS/*.bin; test = every 5th per class",
        None,
    ),
    (
        "event-folders",
        "events:load_event_folders",
        f"event: class folders of event lists, {_FOLDERS}*.bin|npy|npz",
        None,
    ),
):
    DATASETS.register(_name, f"bindguard.data.{_target}", description=_description, extra=_extra)

# The data sets bindguard data prepare can cache: name -> the function listing their files (a Source).
SOURCES: Registry[Any] = Registry("data set read file by file", "bindguard data list")
for _name, _target in (
    ("image-folders", "folders:image_folder_source"),
    ("imagenet-val", "imagenet:imagenet_val_source"),
    ("thermal-folders", "folders:thermal_folder_source"),
    ("depth-folders", "folders:depth_folder_source"),
    ("audio-folders", "folders:audio_folder_source"),
    ("video-folders", "folders:video_folder_source"),
    ("msrvtt", "msrvtt:msrvtt_source"),
    ("esc50", "esc50:esc50_source"),
    ("clotho", "clotho:clotho_source"),
    ("modelnet40", "modelnet:modelnet40_source"),
    ("ncaltech101", "events:ncaltech101_source"),
    ("event-folders", "events:event_folder_source"),
):
    SOURCES.register(_name, f"bindguard.data.{_target}")


def data_source(name: str, /, **options: Any) -> Any:
    """The files of a data set read from files, and how each is decoded (``data.files.Source``)."""
    if name not in SOURCES.names():
        DATASETS.get(name)  # an unknown name: the error names the closest
        raise ConfigError(
            f"data set {name!r} is not read file by file, so there is nothing to prepare; "
            f"evaluate it directly (data sets that can be prepared: {', '.join(SOURCES.names())})"
        )
    return SOURCES.create(name, **options)


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
    if (Path(name) / "manifest.json").is_file():
        return name  # a prepared cache (bindguard data prepare)
    if Path(name).is_dir():
        raise DataError(
            f"--data {name} is a folder without a manifest.json; give a cache made by bindguard data prepare, "
            "a .safetensors data file (see 'User data' in the README) or a data set name (bindguard data list)"
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
    if (Path(name) / "manifest.json").is_file():
        from bindguard.data.prepared import load_prepared

        options.pop("split", None)
        return load_prepared(Path(name), **options)
    if name.endswith(".safetensors"):
        from bindguard.data.tensor_file import load_tensor_file

        options.pop("split", None)
        return load_tensor_file(Path(name), **options)
    return DATASETS.create(name, **options)


__all__ = ["DATASETS", "SOURCES", "Benchmark", "ModalityData", "check_data_source", "data_source", "load_dataset"]
