"""ModelNet40 (Wu et al. 2015) point clouds: the published ``.off`` meshes, or the common HDF5 export.

- ``modelnet40``: ``ROOT/CLASS/{train,test}/*.off`` as published; each mesh is sampled to N
  points by face area, deterministically (see ``data.media.mesh_points``).
- ``modelnet40-h5``: the 2,048-point HDF5 export (``ply_data_{train,test}*.h5`` with datasets
  ``data`` (B, 2048, 3) and ``label`` (B, 1), and ``shape_names.txt``); each cloud keeps its first
  N points (the export's order is already random) and is centred and scaled into the unit sphere.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bindguard._types import Modality
from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.data.files import (
    LabelledFiles,
    Source,
    check_root,
    check_split,
    class_name,
    loader,
    round_robin,
    shape_of,
    templates_for,
)
from bindguard.data.media import mesh_points, normalise_cloud
from bindguard.errors import ConfigError, DataError

DEFAULT_POINTS = 1024


def list_meshes(root: Path, split: str) -> LabelledFiles:
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders; expected ROOT/CLASS/{split}/*.off (ModelNet40's layout)")
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name / split
        found = sorted(folder.glob("*.off")) if folder.is_dir() else []
        if not found:
            raise DataError(f"{folder} holds no .off meshes; ModelNet40 keeps each class's {split} meshes there")
        files += found
        labels += [label] * len(found)
    return LabelledFiles(files, labels, tuple(class_name(c) for c in classes))


def _check_wanted(modalities: Sequence[Modality] | None, name: str) -> None:
    if modalities is not None and Modality.POINT not in [Modality.parse(m) for m in modalities]:
        raise DataError(f"data set {name!r} holds point clouds only; fix: --modalities point")


def modelnet40_source(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    templates: Path | None = None,
) -> Source:
    root = check_root(data_root, "modelnet40")
    listed = list_meshes(root, check_split(split))
    _check_wanted(modalities, "modelnet40")
    points = shape_of(shapes, Modality.POINT, (DEFAULT_POINTS, 3))[0]
    settings = {"shape": [points, 3], "sampling": "area, seeded by the file's SHA-256"}
    decode = partial(mesh_points, points=points)
    return Source(
        "modelnet40", split, Modality.POINT, listed, decode, settings, templates_for(Modality.POINT, templates)
    )


load_modelnet40 = loader(modelnet40_source)


def load_modelnet40_h5(
    *,
    data_root: str | Path | None = None,
    split: str = "test",
    modalities: Sequence[Modality] | None = None,
    limit: int | None = None,
    shapes: dict | None = None,
    sample_rate: int | None = None,
    skip_bad_files: bool = False,
    templates: Path | None = None,
) -> Benchmark:
    import h5py

    root = check_root(data_root, "modelnet40-h5")
    check_split(split)
    names_file = root / "shape_names.txt"
    if not names_file.is_file():
        raise DataError(f"{names_file} is missing; the HDF5 export lists its 40 class names there")
    class_names = tuple(class_name(line) for line in names_file.read_text().split())
    files = sorted(root.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise DataError(f"{root} has no ply_data_{split}*.h5 files (the ModelNet40 HDF5 export)")
    _check_wanted(modalities, "modelnet40-h5")
    points = shape_of(shapes, Modality.POINT, (DEFAULT_POINTS, 3))[0]
    clouds, labels = [], []
    for path in files:
        try:
            with h5py.File(path, "r") as handle:
                data, label = np.asarray(handle["data"]), np.asarray(handle["label"]).reshape(-1)
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"{path}: cannot be read as the HDF5 export ({error}); fix: replace the file") from error
        if data.ndim != 3 or data.shape[2] != 3 or len(label) != len(data):
            raise DataError(
                f"{path}: 'data' must be (B, P, 3) and 'label' (B,) or (B, 1); got {data.shape}, {label.shape}"
            )
        if data.shape[1] < points:
            raise ConfigError(f"{path} holds {data.shape[1]} points per cloud; the encoder wants {points}")
        if label.min() < 0 or label.max() >= len(class_names):
            raise DataError(f"{path}: labels must lie in 0..{len(class_names) - 1} (shape_names.txt)")
        clouds += [normalise_cloud(cloud[:points].astype(np.float64)).astype(np.float32) for cloud in data]
        labels += [int(v) for v in label]
    order = round_robin(LabelledFiles([Path()] * len(labels), labels, class_names))[: limit or len(labels)]
    inputs = torch.from_numpy(np.stack([clouds[i] for i in order]))
    chosen = torch.tensor([labels[i] for i in order], dtype=torch.long)
    data = ModalityData(
        inputs=inputs, labels=chosen, instance_ids=torch.arange(len(order)), source="modelnet40-h5:point"
    )
    return Benchmark(
        name="modelnet40-h5",
        split=split,
        class_names=class_names,
        templates={Modality.POINT: templates_for(Modality.POINT, templates)},
        data={Modality.POINT: data},
    )
