"""ESC-50 (Piczak 2015): 2,000 five-second environmental recordings in 50 classes and 5 folds.

Layout, as published: ``ROOT/meta/esc50.csv`` (columns ``filename, fold, target, category, ...``)
and ``ROOT/audio/*.wav``. The test split is fold ``TEST_FOLD`` (5), the train split folds 1-4;
classes are ordered by ``target`` and named by ``category``. A clip is 5 s at 44.1 kHz: it is
resampled to the encoder's rate and centre-cropped to its window (see ``data.media``).
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
    class_name,
    loader,
    shape_of,
    templates_for,
)
from bindguard.data.media import decode_audio
from bindguard.errors import DataError

TEST_FOLD = 5
COLUMNS = ("filename", "fold", "target", "category")


def list_esc50(root: Path, split: str) -> LabelledFiles:
    """The split's clips and classes from ``meta/esc50.csv``; a row naming a missing file is refused."""
    table = root / "meta" / "esc50.csv"
    try:
        with table.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as error:
        raise DataError(
            f"ESC-50 needs {table} ({error}); give --data-root the folder that holds meta/ and audio/"
        ) from error
    if not rows or any(column not in rows[0] for column in COLUMNS):
        raise DataError(f"{table} lacks the columns {', '.join(COLUMNS)}; is this ESC-50's meta/esc50.csv?")
    names: dict[int, str] = {}
    files, labels = [], []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            raise DataError(f"{table} line {number}: fold and target must be integers") from None
        names[target] = class_name(row["category"])
        path = root / "audio" / row["filename"]
        if not path.is_file():  # in either split: the table and the folder disagree
            raise DataError(f"{table} line {number} names {path}, which does not exist; fix: restore the file")
        if (fold == TEST_FOLD) != (split == "test"):
            continue
        files.append(path)
        labels.append(target)
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{table}: targets must run 0..{len(names) - 1} without gaps")
    return LabelledFiles(files, labels, tuple(names[t] for t in range(len(names))))


def esc50_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    root = check_root(data_root, "esc50")
    listed = list_esc50(root, check_split(split))
    if modalities is not None and Modality.AUDIO not in [Modality.parse(m) for m in modalities]:
        raise DataError("data set 'esc50' holds audio only; fix: --modalities audio")
    rate = sample_rate or 16000
    (samples,) = shape_of(shapes, Modality.AUDIO, (rate,))
    decode = partial(decode_audio, samples=samples, sample_rate=rate)
    settings = {"shape": [samples], "sample_rate": rate, "test_fold": TEST_FOLD}
    return Source("esc50", split, Modality.AUDIO, listed, decode, settings, templates_for(Modality.AUDIO, templates))


load_esc50 = loader(esc50_source)
