"""Modality names, aliases, registries and their error messages."""

from __future__ import annotations

import pytest
import torch

from bindguard._types import PERCEPTUAL_MODALITIES, Modality, parse_modalities
from bindguard.errors import InvalidInputError, UnknownNameError
from bindguard.modalities import audio_spec, image_spec, point_spec


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("image", Modality.IMAGE),
        ("vision", Modality.IMAGE),
        ("language", Modality.TEXT),
        ("point_cloud", Modality.POINT),
        ("Point-Cloud", Modality.POINT),
        ("THERMAL", Modality.THERMAL),
    ],
)
def test_aliases(name: str, expected: Modality) -> None:
    assert Modality.parse(name) is expected


def test_unknown_modality_suggests_and_lists_allowed() -> None:
    with pytest.raises(UnknownNameError) as caught:
        Modality.parse("audoi")
    message = str(caught.value)
    assert "did you mean 'audio'" in message and "allowed:" in message and "\n" not in message


def test_parse_modalities_all_and_subset() -> None:
    assert parse_modalities("all", available=PERCEPTUAL_MODALITIES) == list(PERCEPTUAL_MODALITIES)
    assert parse_modalities("vision,audio,image", available=PERCEPTUAL_MODALITIES) == [Modality.IMAGE, Modality.AUDIO]
    with pytest.raises(UnknownNameError, match="not available"):
        parse_modalities("text", available=PERCEPTUAL_MODALITIES)


def test_unknown_encoder_suggests_close_name() -> None:
    from bindguard.encoders import create_encoder

    with pytest.raises(UnknownNameError, match=r"did you mean 'tinybind'\? .*bindguard models list"):
        create_encoder("tinybnd")


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.rand(2, 3, 16, 16), "shape"),
        (torch.rand(2, 32, 32), "shape"),
        (torch.randint(0, 2, (2, 3, 32, 32)), "floating point"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (torch.full((2, 3, 32, 32), float("inf")), "NaN or Inf"),
        (torch.rand(2, 3, 32, 32) * 255, "outside its domain"),
        (torch.rand(0, 3, 32, 32), "empty"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_image_spec_rejects_bad_input(tensor: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        image_spec(32, 32).validate(tensor)


def test_point_projection_enters_the_unit_ball_and_keeps_inner_points() -> None:
    spec = point_spec(8)
    points = torch.randn(4, 8, 3) * 2
    projected = spec.project(points)
    assert projected.norm(dim=-1).max() <= 1 + 1e-6
    inside = points.norm(dim=-1) <= 1
    assert torch.equal(projected[inside], points[inside])
    with pytest.raises(InvalidInputError, match="outside its domain"):
        spec.validate(points * 10)


def test_audio_domain() -> None:
    spec = audio_spec(100, 16_000)
    assert spec.range == 2.0
    assert spec.project(torch.tensor([[-3.0, 0.5, 2.0]])).tolist() == [[-1.0, 0.5, 1.0]]
