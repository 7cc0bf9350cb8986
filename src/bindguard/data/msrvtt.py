"""MSR-VTT (Xu et al. 2016): 10,000 web videos in 20 categories, 20 captions each.

Layout, as released: ``ROOT/videos/`` (or ``ROOT/videos/all/``) holding ``video<N>.mp4``, and the
annotation files ``train_val_videodatainfo.json`` and ``test_videodatainfo.json`` (in ``ROOT`` or
``ROOT/annotation``): ``videos`` (``video_id``, ``category``, ``split``: train, validate or test)
and ``sentences`` (``video_id``, ``caption``). The test split is the official 2,990 test videos,
the train split the train and validate videos. Categories are named by ``ROOT/category.txt``
(lines ``name<TAB>index``) when it is there, else ``category N``. Every video keeps all of its
captions: they are the text side of caption retrieval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

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
from bindguard.data.folders import DEFAULT_SHAPES
from bindguard.data.media import decode_video
from bindguard.errors import DataError

SPLITS = {"test": ("test",), "train": ("train", "validate")}
CATEGORIES = 20


def _annotations(root: Path) -> list[Path]:
    found = sorted({*root.glob("*videodatainfo.json"), *root.glob("annotation/*videodatainfo.json")})
    if not found:
        raise DataError(
            f"{root} has no *videodatainfo.json (MSR-VTT's annotation: train_val_videodatainfo.json, "
            "test_videodatainfo.json); give --data-root the folder that holds them and videos/"
        )
    return found


def _category_names(root: Path) -> tuple[str, ...]:
    table = root / "category.txt"
    if not table.is_file():
        return tuple(f"category {index}" for index in range(CATEGORIES))
    names = {}
    for number, line in enumerate(table.read_text().splitlines(), start=1):
        if line.strip():
            try:
                name, index = line.rsplit(None, 1)
                names[int(index)] = class_name(name)
            except ValueError:
                raise DataError(f"{table} line {number}: expected 'name<TAB>index'") from None
    return tuple(names.get(index, f"category {index}") for index in range(CATEGORIES))


def list_msrvtt(root: Path, split: str) -> LabelledFiles:
    videos: dict[str, int] = {}
    captions: dict[str, list[str]] = {}
    for path in _annotations(root):
        try:
            info = json.loads(path.read_text())
            for video in info["videos"]:
                if video["split"] in SPLITS[split]:
                    videos[video["video_id"]] = int(video["category"])
            for sentence in info.get("sentences", []):
                captions.setdefault(sentence["video_id"], []).append(str(sentence["caption"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not MSR-VTT's annotation ({error}); expected 'videos' and 'sentences'") from error
    folder = root / "videos" / "all" if (root / "videos" / "all").is_dir() else root / "videos"
    files, labels, texts = [], [], []
    for video_id in sorted(videos, key=lambda v: (len(v), v)):  # video2 before video10
        path = folder / f"{video_id}.mp4"
        if not path.is_file():
            raise DataError(f"the annotation names {video_id}, but {path} does not exist; fix: restore the file")
        if not captions.get(video_id):
            raise DataError(f"the annotation gives {video_id} no caption; every MSR-VTT video has 20")
        if not 0 <= videos[video_id] < CATEGORIES:
            raise DataError(f"the annotation gives {video_id} category {videos[video_id]}, outside 0..19")
        files.append(path)
        labels.append(videos[video_id])
        texts.append(tuple(captions[video_id]))
    return LabelledFiles(files, labels, _category_names(root), texts)


def msrvtt_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    root = check_root(data_root, "msrvtt")
    listed = list_msrvtt(root, check_split(split))
    if modalities is not None and Modality.VIDEO not in [Modality.parse(m) for m in modalities]:
        raise DataError("data set 'msrvtt' holds video only; fix: --modalities video")
    shape = shape_of(shapes, Modality.VIDEO, DEFAULT_SHAPES[Modality.VIDEO])
    decode = partial(decode_video, frames=shape[0], height=shape[2], width=shape[3])
    return Source(
        "msrvtt",
        split,
        Modality.VIDEO,
        listed,
        decode,
        {"shape": list(shape)},
        templates_for(Modality.VIDEO, templates),
    )


load_msrvtt = loader(msrvtt_source)
