"""Class folders of media files (ImageNet, UCF-101/Kinetics, LLVIP, NYU-D/SUN-D style), one modality each.

Layout: ``ROOT/[SPLIT/]CLASS/FILE``. The split folder is ``train`` for the train split and the
first of ``test``, ``val``, ``validation`` for the test split; without split folders ``ROOT``
itself is the test split. Classes are the sorted folder names (``_`` and ``-`` read as spaces in
prompts); files are taken in name order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from bindguard._types import Modality
from bindguard.data.builtin.benchmark import Benchmark
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
from bindguard.data.media import NEAREST_METRES, decode_audio, decode_depth, decode_image, decode_video
from bindguard.errors import DataError

EXTENSIONS = {
    Modality.IMAGE: (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"),
    Modality.THERMAL: (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"),
    Modality.DEPTH: (".png",),
    Modality.AUDIO: (".wav", ".flac", ".ogg"),
    Modality.VIDEO: (".mp4", ".avi", ".mkv", ".webm", ".mov"),
}
# per-sample shapes when the encoder asks for none: the built-in benchmark's sizes
DEFAULT_SHAPES = {
    Modality.IMAGE: (3, 224, 224),
    Modality.THERMAL: (1, 224, 224),
    Modality.DEPTH: (1, 224, 224),
    Modality.AUDIO: (16000,),
    Modality.VIDEO: (8, 3, 224, 224),
}
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "validation")}


def split_folder(root: Path, split: str) -> Path:
    """The folder holding ``split``'s class folders."""
    for name in SPLIT_FOLDERS[check_split(split)]:
        if (root / name).is_dir():
            return root / name
    if split == "test" and not any((root / n).is_dir() for n in SPLIT_FOLDERS["train"]):
        return root  # no split folders: the root's class folders are the test split
    raise DataError(
        f"{root} has no {split} split: expected a folder named {' or '.join(SPLIT_FOLDERS[split])} holding class folders"
    )


def list_class_folders(folder: Path, extensions: Sequence[str]) -> LabelledFiles:
    """Files under ``folder/CLASS/`` with the given extensions, labelled by sorted class folder."""
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} has no class folders; expected {folder}/CLASS/FILE for each class")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in extensions)
        if not found:
            raise DataError(
                f"class folder {folder / name} has no {'/'.join(extensions)} files; fix: add its files or remove it"
            )
        files += found
        labels += [label] * len(found)
    return LabelledFiles(files, labels, tuple(class_name(c) for c in classes))


def class_folder_source(
    modality: Modality,
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
    name: str = "",
) -> Source:
    """One modality's class folders and how each file is decoded to the encoder's shapes."""
    root = check_root(data_root, name)
    listed = list_class_folders(split_folder(root, split), EXTENSIONS[modality])
    if (root / "LOC_synset_mapping.txt").is_file():  # ImageNet's wnid folders, named as people say them
        from bindguard.data.imagenet import synset_names

        names = synset_names(root / "LOC_synset_mapping.txt")
        listed = replace(listed, class_names=tuple(names.get(c, c) for c in listed.class_names))
    if modalities is not None and modality not in [Modality.parse(m) for m in modalities]:
        raise DataError(f"data set {name!r} holds {modality.value} only; fix: --modalities {modality.value}")
    shape = shape_of(shapes, modality, DEFAULT_SHAPES[modality])
    settings: dict = {"shape": list(shape)}
    if modality is Modality.AUDIO:
        settings["sample_rate"] = sample_rate or 16000
        decode = partial(decode_audio, samples=shape[0], sample_rate=settings["sample_rate"])
    elif modality is Modality.VIDEO:
        decode = partial(decode_video, frames=shape[0], height=shape[2], width=shape[3])
    elif modality is Modality.DEPTH:
        settings["nearest_metres"] = NEAREST_METRES
        decode = partial(decode_depth, height=shape[1], width=shape[2])
    else:
        decode = partial(decode_image, channels=shape[0], height=shape[1], width=shape[2])
    return Source(name, split, modality, listed, decode, settings, templates_for(modality, templates))


def _named(modality: Modality, name: str) -> tuple[Callable[..., Benchmark], Callable[..., Source]]:
    """The registered loader and source of one modality's class folders."""
    source = partial(class_folder_source, modality, name=name)
    return loader(source), source


load_image_folders, image_folder_source = _named(Modality.IMAGE, "image-folders")
load_thermal_folders, thermal_folder_source = _named(Modality.THERMAL, "thermal-folders")
load_depth_folders, depth_folder_source = _named(Modality.DEPTH, "depth-folders")
load_audio_folders, audio_folder_source = _named(Modality.AUDIO, "audio-folders")
load_video_folders, video_folder_source = _named(Modality.VIDEO, "video-folders")
