"""Evaluation against a class-centers file (UniBind-style, several descriptions per class) instead of
prompt templates: the same rows when the file holds the template centers, the nearest-center rule
otherwise, and a refusal for centers of other classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bindguard
from bindguard._types import Modality
from bindguard.data import load_dataset
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.class_centers import save_class_centers
from bindguard.errors import DataError

SMALL = dict(modalities="image", n=16, attacks="fgsm", eps=["4/255"], checks=False, square_queries=0, batch_size=16)


@pytest.fixture(scope="module")
def template_centers(tinybind) -> tuple[torch.Tensor, tuple[str, ...]]:
    benchmark = load_dataset("builtin", split="test", limit=1, modalities=[Modality.IMAGE])
    centers = semantic_centers(tinybind, benchmark.class_names, benchmark.templates[Modality.IMAGE])
    return centers, benchmark.class_names


def test_one_center_per_class_gives_the_template_rows(tmp_path: Path, tinybind, template_centers) -> None:
    centers, names = template_centers
    save_class_centers(tmp_path / "centers.safetensors", centers[:, None, :], names)
    plain = bindguard.evaluate(tinybind, "builtin", **SMALL)
    from_file = bindguard.evaluate(tinybind, "builtin", centers=tmp_path / "centers.safetensors", **SMALL)
    strip = lambda rows: [{k: v for k, v in row.to_dict().items() if k != "max_norm"} for row in rows]  # noqa: E731
    assert strip(from_file.rows) == strip(plain.rows)


def test_nearest_rule_scores_by_the_best_of_each_class(tmp_path: Path, tinybind, template_centers) -> None:
    centers, names = template_centers
    generator = torch.Generator().manual_seed(0)
    distractors = F.normalize(torch.randn(len(names), 2, centers.shape[1], generator=generator), dim=-1)
    several = torch.cat([centers[:, None, :], distractors], dim=1)  # (C, 3, D)
    save_class_centers(tmp_path / "centers.safetensors", several, names)
    results = bindguard.evaluate(
        tinybind, "builtin", centers=tmp_path / "centers.safetensors", **{**SMALL, "attacks": None}
    )
    benchmark = load_dataset("builtin", split="test", limit=16, modalities=[Modality.IMAGE])
    item = benchmark.data[Modality.IMAGE]
    embeddings = tinybind.encode_modality(Modality.IMAGE, item.inputs)
    nearest = torch.einsum("bd,ckd->bck", embeddings, several).amax(-1).argmax(1)
    expected = float((nearest == item.labels).float().mean())
    assert results.clean[0].top1 == pytest.approx(expected)
    mean = bindguard.evaluate(
        tinybind, "builtin", centers=tmp_path / "centers.safetensors", center_rule="mean", **{**SMALL, "attacks": None}
    )
    by_mean = (embeddings @ F.normalize(F.normalize(several, dim=-1).mean(1), dim=-1).T).argmax(1)
    assert mean.clean[0].top1 == pytest.approx(float((by_mean == item.labels).float().mean()))


def test_centers_of_other_classes_are_refused(tmp_path: Path, tinybind, template_centers) -> None:
    centers, names = template_centers
    save_class_centers(tmp_path / "centers.safetensors", centers[:, None, :], tuple(reversed(names)))
    with pytest.raises(DataError, match="holds classes"):
        bindguard.evaluate(tinybind, "builtin", centers=tmp_path / "centers.safetensors", **SMALL)
