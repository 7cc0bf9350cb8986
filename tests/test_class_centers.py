"""UniBind-style class centers: (C, K, D) files, nearest and mean scoring, and the pickle importer."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bindguard.encoders.class_centers import (
    ClassCenters,
    center_logits,
    import_unibind_centers,
    load_class_centers,
    mean_centers,
    save_class_centers,
)
from bindguard.errors import ConfigError, DataError, InvalidInputError
from bindguard.objectives.base import ObjectiveContext, class_scores


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rule", ["nearest", "mean"])
def test_one_center_per_class_reduces_to_single_center_scoring(rule: str) -> None:
    semantic = F.normalize(_random(5, 16), dim=-1)  # (C, D), what semantic_centers returns
    embeddings = F.normalize(_random(7, 16, seed=1), dim=-1)
    today = 100.0 * class_scores(embeddings, ObjectiveContext(centers=semantic))
    assert torch.allclose(center_logits(embeddings, semantic[:, None], rule=rule, scale=100.0), today, atol=1e-5)


def test_nearest_and_mean_rules_differ_on_a_crafted_example() -> None:
    # class 0 has two orthogonal descriptions, one exactly on the embedding; class 1 two copies of one
    # direction at cosine 0.8. Nearest: class 0 (1.0 > 0.8). Mean: class 1 (0.8 > cos 45 deg = 0.707).
    centers = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.6], [0.8, 0.6]]])  # (2, 2, 2)
    embedding = torch.tensor([[1.0, 0.0]])
    nearest = center_logits(embedding, centers, rule="nearest")
    mean = center_logits(embedding, centers, rule="mean")
    assert torch.allclose(nearest, torch.tensor([[1.0, 0.8]]))
    assert torch.allclose(mean, torch.tensor([[0.5**0.5, 0.8]]))
    assert nearest.argmax(1).item() == 0 and mean.argmax(1).item() == 1


def test_nearest_rule_predicts_the_class_of_the_top1_center_among_all() -> None:
    centers = _random(6, 4, 12)  # (C, K, D)
    embeddings = _random(40, 12, seed=1)
    flat = F.normalize(embeddings, dim=-1) @ F.normalize(centers, dim=-1).reshape(24, 12).T  # (B, C*K)
    unibind = flat.softmax(1).argmax(1) // 4  # UniBind: softmax over all K*C centres, class of the top-1
    assert torch.equal(center_logits(embeddings, centers).argmax(1), unibind)


def test_logits_are_scaled_cosines_invariant_to_norms_and_differentiable() -> None:
    centers, embeddings = _random(3, 5, 8), _random(4, 8, seed=1).requires_grad_()
    logits = center_logits(embeddings, centers, scale=30.0)
    assert logits.shape == (4, 3) and bool((logits.abs() <= 30.0 + 1e-4).all())
    assert torch.allclose(center_logits(7 * embeddings, 0.1 * centers, scale=30.0), logits, atol=1e-5)
    logits.sum().backward()
    assert embeddings.grad is not None and bool(torch.isfinite(embeddings.grad).all())
    assert bool((embeddings.grad != 0).any())


def test_mean_rule_equals_single_center_scoring_on_the_mean_centers() -> None:
    centers, embeddings = _random(3, 5, 8), _random(4, 8, seed=1)
    single = mean_centers(centers)  # (C, D)
    assert torch.allclose(single.norm(dim=-1), torch.ones(3))
    expected = F.normalize(embeddings, dim=-1) @ single.T
    assert torch.allclose(center_logits(embeddings, centers, rule="mean"), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("embeddings", "centers", "message"),
    [
        (torch.zeros(2, 8), torch.ones(3, 8), r"\(C, K, D\).*centers\[:, None\]"),
        (torch.zeros(8), torch.ones(3, 2, 8), r"\(B, D\)"),
        (torch.zeros(2, 7), torch.ones(3, 2, 8), "dimension 7 but the centers 8"),
        (torch.full((2, 8), float("nan")), torch.ones(3, 2, 8), "NaN"),
    ],
)
def test_bad_logit_inputs_fail_with_one_line(embeddings: torch.Tensor, centers: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        center_logits(embeddings, centers)
    assert "\n" not in str(caught.value)


def test_unknown_rule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown center rule 'max'; allowed: nearest, mean"):
        center_logits(torch.ones(1, 2), torch.ones(1, 1, 2), rule="max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("centers", "names", "message"),
    [
        (torch.ones(2, 8), ["a", "b"], r"\(C, K, D\)"),
        (torch.ones(2, 1, 8, dtype=torch.int64), ["a", "b"], "floating-point"),
        (torch.ones(2, 1, 8), ["a"], "2 classes of centers but 1 class names"),
        (torch.ones(2, 1, 8), ["a", "a"], "'a' appears more than once"),
        (torch.ones(2, 1, 8), ["a", ""], "non-empty strings"),
        (torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]]), ["a", "b"], r"\(1, 0\).*all zeros"),
        (torch.tensor([[[1.0, float("inf")]]]), ["a"], "NaN or infinite"),
    ],
)
def test_class_centers_are_validated_on_construction(centers: torch.Tensor, names: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ClassCenters(centers, tuple(names))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    centers = _random(3, 4, 8)
    saved = save_class_centers(tmp_path / "centers.safetensors", centers, ["cat", "dog", "ship"])
    loaded = load_class_centers(tmp_path / "centers.safetensors")
    assert loaded.class_names == ("cat", "dog", "ship") == saved.class_names
    assert torch.equal(loaded.centers, centers)
    assert (loaded.num_classes, loaded.per_class, loaded.dim) == (3, 4, 8)
    embeddings = _random(5, 8, seed=1)
    assert torch.equal(loaded.logits(embeddings, rule="mean"), center_logits(embeddings, centers, rule="mean"))


def test_loading_refuses_files_that_are_not_class_centers(tmp_path: Path) -> None:
    save_file({"weights": torch.ones(2, 1, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="no 'centers' tensor"):
        load_class_centers(tmp_path / "other.safetensors")
    save_file({"centers": torch.ones(2, 1, 3)}, str(tmp_path / "unnamed.safetensors"))
    with pytest.raises(DataError, match="no class_names"):
        load_class_centers(tmp_path / "unnamed.safetensors")
    metadata = {"class_names": json.dumps(["a", "b", "c"])}
    save_file({"centers": torch.ones(2, 1, 3)}, str(tmp_path / "short.safetensors"), metadata=metadata)
    with pytest.raises(DataError, match="short.safetensors: 2 classes of centers but 3 class names"):
        load_class_centers(tmp_path / "short.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_class_centers(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="no such class-centers file"):
        load_class_centers(tmp_path / "absent.safetensors")


def test_unibind_pickle_import_round_trip(tmp_path: Path) -> None:
    labels = ["zebra", "airplane", "mug"]  # not sorted: the dict's order is the class order
    original = {label: _random(50, 32, seed=index) for index, label in enumerate(labels)}
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps(original))
    imported = import_unibind_centers(tmp_path / "centres.pkl", tmp_path / "centres.safetensors")
    loaded = load_class_centers(tmp_path / "centres.safetensors")
    assert loaded.class_names == tuple(labels) == imported.class_names
    assert torch.equal(loaded.centers, torch.stack([original[label] for label in labels]))


def test_import_accepts_half_precision_integer_labels_and_single_vectors(tmp_path: Path) -> None:
    original = {3: _random(8).half(), 7: _random(8, seed=1).half()}
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps(original))
    imported = import_unibind_centers(tmp_path / "centres.pkl", tmp_path / "centres.safetensors")
    assert imported.class_names == ("3", "7") and imported.centers.shape == (2, 1, 8)
    assert imported.centers.dtype == torch.float32
    assert torch.equal(imported.centers[1, 0], original[7].float())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([torch.ones(2, 3)], "holds a list"),
        ({}, "holds a dict, not a non-empty"),
        ({"a": torch.ones(2, 3), "b": torch.ones(3, 3)}, r"'b' has centers \(3, 3\) but 'a' has \(2, 3\)"),
        ({"a": torch.ones(2, 3, dtype=torch.int32)}, "floating-point"),
        ({"a": "text"}, "holds str"),
        ({(1, 2): torch.ones(2, 3)}, "labels must be strings"),
        ({"a": torch.tensor([[0.0, 0.0]])}, "all zeros"),
    ],
)
def test_import_refuses_pickles_that_are_not_centres(tmp_path: Path, content: object, message: str) -> None:
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(DataError, match=message):
        import_unibind_centers(tmp_path / "centres.pkl", tmp_path / "centres.safetensors")
    assert not (tmp_path / "centres.safetensors").exists()


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_import_of_a_hostile_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps({"cat": torch.ones(2, 3), "dog": _Shell(marker)}))
    with pytest.raises(DataError, match=r"asks for \w+\.system"):
        import_unibind_centers(tmp_path / "centres.pkl", tmp_path / "centres.safetensors")
    assert not marker.exists() and not (tmp_path / "centres.safetensors").exists()


def test_import_needs_a_safetensors_destination(tmp_path: Path) -> None:
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps({"a": torch.ones(2, 3)}))
    with pytest.raises(DataError, match="must end in .safetensors"):
        import_unibind_centers(tmp_path / "centres.pkl", tmp_path / "centres.pkl2")
