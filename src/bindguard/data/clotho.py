"""Audio with captions in Clotho's layout (Drossos et al. 2020): text<->audio caption retrieval.

Layout, as published: ``ROOT/clotho_captions_{evaluation,development}.csv`` (columns
``file_name, caption_1 ... caption_5``) and the clips in ``ROOT/{evaluation,development}/``. The
test split is ``evaluation``, the train split ``development``. The clips carry no classes: an
evaluation measures caption retrieval only (no zero-shot rows). Clips are resampled and
centre-cropped to the encoder's window (``data.media``); Clotho's clips run 15-30 s, so a short
window hears their middle.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from bindguard._types import Modality
from bindguard.data.files import (
    LabelledFiles,
    Source,
    check_root,
    check_split,
    loader,
    shape_of,
    templates_for,
)
from bindguard.data.media import decode_audio
from bindguard.errors import DataError

FOLDERS = {"test": "evaluation", "train": "development"}


def list_clotho(root: Path, split: str) -> LabelledFiles:
    folder = FOLDERS[split]
    table = root / f"clotho_captions_{folder}.csv"
    try:
        with table.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as error:
        raise DataError(
            f"Clotho's {split} split needs {table} ({error}); give --data-root the folder holding it"
        ) from error
    if not rows or "file_name" not in rows[0] or not any(key.startswith("caption") for key in rows[0]):
        raise DataError(f"{table} lacks the columns file_name, caption_1 ... caption_5")
    files, captions = [], []
    for number, row in enumerate(rows, start=2):
        path = root / folder / row["file_name"]
        if not path.is_file():
            raise DataError(f"{table} line {number} names {path}, which does not exist; fix: restore the file")
        texts = tuple(
            value.strip() for key, value in row.items() if key.startswith("caption") and value and value.strip()
        )
        if not texts:
            raise DataError(f"{table} line {number} gives {row['file_name']} no caption")
        files.append(path)
        captions.append(texts)
    return LabelledFiles(files, list(range(len(files))), (), captions)


def clotho_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    root = check_root(data_root, "clotho")
    listed = list_clotho(root, check_split(split))
    if modalities is not None and Modality.AUDIO not in [Modality.parse(m) for m in modalities]:
        raise DataError("data set 'clotho' holds audio only; fix: --modalities audio")
    rate = sample_rate or 16000
    (samples,) = shape_of(shapes, Modality.AUDIO, (rate,))
    decode = partial(decode_audio, samples=samples, sample_rate=rate)
    settings = {"shape": [samples], "sample_rate": rate}
    return Source("clotho", split, Modality.AUDIO, listed, decode, settings, templates_for(Modality.AUDIO, templates))


load_clotho = loader(clotho_source)
