"""ImageNet's validation set in the layout it is distributed in (ILSVRC2012 on Kaggle), labels from its table.

Layout: ``ROOT/LOC_synset_mapping.txt`` (one ``wnid name, other names`` per line, in class-index
order), ``ROOT/LOC_val_solution.csv`` (``ImageId,PredictionString``; the first word of the
prediction string is the image's wnid) and the images in ``ROOT/ILSVRC/Data/CLS-LOC/val/`` or
``ROOT/val/`` (``ImageId.JPEG``). A class is named by the first name on its mapping line
(``n01440764 tench, Tinca tinca`` -> ``tench``). Only the test split exists. Class folders named
by wnid (``image-folders``) are named the same way when ``LOC_synset_mapping.txt`` sits in ROOT.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from bindguard._types import Modality
from bindguard.data.files import LabelledFiles, Source, check_root, loader, shape_of, templates_for
from bindguard.data.folders import DEFAULT_SHAPES
from bindguard.data.media import decode_image
from bindguard.errors import ConfigError, DataError

MAPPING = "LOC_synset_mapping.txt"
SOLUTION = "LOC_val_solution.csv"


def synset_names(path: Path) -> dict[str, str]:
    """wnid -> readable name, in the file's (class-index) order."""
    names = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, rest = line.partition(" ")
        if not wnid.startswith("n") or not rest.strip():
            raise DataError(f"{path} line {number}: expected 'wnid name, other names'")
        names[wnid] = rest.split(",")[0].strip()
    return names


def list_imagenet_val(root: Path) -> LabelledFiles:
    for needed in (MAPPING, SOLUTION):
        if not (root / needed).is_file():
            raise DataError(
                f"ImageNet's validation layout needs {root / needed}; give --data-root the folder holding it"
            )
    names = synset_names(root / MAPPING)
    index = {wnid: position for position, wnid in enumerate(names)}
    images = next((p for p in (root / "ILSVRC" / "Data" / "CLS-LOC" / "val", root / "val") if p.is_dir()), None)
    if images is None:
        raise DataError(f"{root} has neither ILSVRC/Data/CLS-LOC/val/ nor val/ holding the validation images")
    files, labels = [], []
    with (root / SOLUTION).open(newline="") as stream:
        for number, row in enumerate(csv.DictReader(stream), start=2):
            try:
                image, wnid = row["ImageId"], row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError):
                raise DataError(f"{root / SOLUTION} line {number}: expected ImageId,PredictionString") from None
            if wnid not in index:
                raise DataError(f"{root / SOLUTION} line {number}: {wnid} is not in {MAPPING}")
            path = images / f"{image}.JPEG"
            if not path.is_file():
                raise DataError(f"{root / SOLUTION} line {number} names {path}, which does not exist; fix: restore it")
            files.append(path)
            labels.append(index[wnid])
    order = sorted(range(len(files)), key=lambda i: files[i].name)
    return LabelledFiles([files[i] for i in order], [labels[i] for i in order], tuple(names.values()))


def imagenet_val_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    root = check_root(data_root, "imagenet-val")
    if split != "test":
        raise ConfigError("imagenet-val holds the validation images only: the test split; train on image-folders")
    if modalities is not None and Modality.IMAGE not in [Modality.parse(m) for m in modalities]:
        raise DataError("data set 'imagenet-val' holds image only; fix: --modalities image")
    listed = list_imagenet_val(root)
    shape = shape_of(shapes, Modality.IMAGE, DEFAULT_SHAPES[Modality.IMAGE])
    decode = partial(decode_image, channels=shape[0], height=shape[1], width=shape[2])
    return Source(
        "imagenet-val",
        split,
        Modality.IMAGE,
        listed,
        decode,
        {"shape": list(shape)},
        templates_for(Modality.IMAGE, templates),
    )


load_imagenet_val = loader(imagenet_val_source)
