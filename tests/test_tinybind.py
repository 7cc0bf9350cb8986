"""TinyBind behaves as an encoder: shapes, unit norm, gradients, purity, determinism, accuracy."""

from __future__ import annotations

import pytest
import torch

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.encoders.centers import semantic_centers
from bindguard.errors import InvalidInputError, UnknownNameError


@pytest.fixture(scope="module")
def small_batch(test_benchmark):
    return {m: test_benchmark.data[m].inputs[:4].clone() for m in PERCEPTUAL_MODALITIES}


def test_interface(tinybind) -> None:
    assert tinybind.embed_dim == 384
    assert set(tinybind.modalities) == set(Modality)
    assert tinybind.input_spec("vision").shape == (3, 32, 32)
    assert tinybind.input_spec(Modality.AUDIO).sample_rate == 16_000


@pytest.mark.parametrize("modality", PERCEPTUAL_MODALITIES)
def test_encode_is_unit_norm_differentiable_pure_and_deterministic(tinybind, small_batch, modality) -> None:
    x = small_batch[modality].clone().requires_grad_(True)
    before = x.detach().clone()
    embedding = tinybind.encode_modality(modality, x)
    assert embedding.shape == (4, 384)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(4), atol=1e-5)
    embedding[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, "no gradient reaches the raw input"
    assert torch.equal(x.detach(), before), "encode mutated its input"
    with torch.no_grad():
        again = tinybind.encode_modality(modality, before)
    assert torch.allclose(embedding.detach(), again, atol=1e-6)
    assert not tinybind.training


def test_encode_dict_of_modalities(tinybind, small_batch) -> None:
    with torch.no_grad():
        out = tinybind.encode({"vision": small_batch[Modality.IMAGE], "point_cloud": small_batch[Modality.POINT]})
    assert set(out) == {Modality.IMAGE, Modality.POINT}


def test_bad_input_is_refused(tinybind, small_batch) -> None:
    with pytest.raises(InvalidInputError, match=r"audio input must have shape \(B,16000\)"):
        tinybind.encode_modality("audio", torch.zeros(2, 8000))
    with pytest.raises(InvalidInputError, match="outside its domain"):
        tinybind.encode_modality("audio", small_batch[Modality.AUDIO] * 5)
    with pytest.raises(InvalidInputError, match="list of strings"):
        tinybind.encode_modality("text", "one string")
    with pytest.raises(UnknownNameError, match="allowed"):
        tinybind.encode_modality("imu", torch.zeros(1, 6))


def test_clean_zero_shot_accuracy_holds(tinybind, test_benchmark) -> None:
    """Golden floor on the first 100 held-out samples of each modality (full set: see closing notes)."""
    for modality in PERCEPTUAL_MODALITIES:
        data = test_benchmark.data[modality]
        centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[modality])
        with torch.no_grad():
            predictions = (tinybind.encode_modality(modality, data.inputs[:100]) @ centers.T).argmax(1)
        accuracy = float((predictions == data.labels[:100]).float().mean())
        assert accuracy >= 0.85, f"{modality}: {accuracy:.2f}"


def test_semantic_centers_are_cached(tinybind, test_benchmark, tmp_path, monkeypatch) -> None:
    from bindguard.encoders import centers as centers_module

    monkeypatch.setenv("BINDGUARD_CACHE_DIR", str(tmp_path))
    templates = test_benchmark.templates[Modality.IMAGE]
    first = semantic_centers(tinybind, test_benchmark.class_names, templates)
    files = list((tmp_path / "centers").glob("*.safetensors"))
    assert len(files) == 1
    compute = centers_module.compute_semantic_centers
    with monkeypatch.context() as patched:  # a cache hit never runs the text tower
        patched.setattr(centers_module, "compute_semantic_centers", lambda *a, **k: pytest.fail("recomputed"))
        assert torch.equal(semantic_centers(tinybind, test_benchmark.class_names, templates), first)
    assert centers_module.compute_semantic_centers is compute
    files[0].write_bytes(b"damaged")  # a damaged cache entry is recomputed, not trusted
    second = semantic_centers(tinybind, test_benchmark.class_names, templates)
    assert torch.allclose(first, second, atol=1e-6)
    assert torch.allclose(first.norm(dim=-1), torch.ones(10), atol=1e-5)
