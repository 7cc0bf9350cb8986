"""Input specs own what generic code would otherwise branch on: grid view, window shape, purifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
import torch
from torch import nn

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.attacks.square import Square
from bindguard.calibration import CalibrationConfig
from bindguard.calibration.purifiers import ImagePurifier, PointPurifier, Purifier, WaveformPurifier
from bindguard.encoders.base import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration
from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec, audio_spec, depth_spec, image_spec, point_spec, thermal_spec, video_spec
from bindguard.objectives import EmbeddingDistortion, ObjectiveContext

# Specs of several sizes, and the (C, T, H, W) each one's grid must have.
SPECS: dict[str, tuple[InputSpec, tuple[int, int, int, int]]] = {
    "image-224": (image_spec(224, 224), (3, 1, 224, 224)),
    "image-12x20": (image_spec(12, 20), (3, 1, 12, 20)),
    "video-8-frames": (video_spec(8, 16, 16), (3, 8, 16, 16)),
    "audio-48khz": (audio_spec(2000, 48_000), (1, 1, 1, 2000)),
    "point-512": (point_spec(512), (3, 1, 1, 512)),
    "depth": (depth_spec(10, 14), (1, 1, 10, 14)),
    "thermal": (thermal_spec(9, 9), (1, 1, 9, 9)),
}
DENOISERS = {"pixels": ImagePurifier, "waveform": WaveformPurifier, "points": PointPurifier}


def random_inputs(spec: InputSpec, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, *shape) inputs inside the domain, touching its edges (so projections matter)."""
    if spec.per_point_budget:
        directions = torch.nn.functional.normalize(torch.randn((count, *spec.shape), generator=generator), dim=-1)
        return directions * torch.rand((count, spec.shape[0], 1), generator=generator)
    low, high = spec.domain
    return (low + (high - low) * torch.rand((count, *spec.shape), generator=generator)).clamp(low, high)


# --- the grid view ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_grid_view_round_trips_at_any_size(name: str) -> None:
    spec, grid_shape = SPECS[name]
    x = torch.randn((2, *spec.shape), generator=torch.Generator().manual_seed(0))
    grid = spec.to_grid(x)
    assert tuple(grid.shape) == (2, *grid_shape)
    back = spec.from_grid(grid)
    assert torch.equal(back, x) and back.is_contiguous()


def test_grid_axes_put_each_axis_in_its_role() -> None:
    points = torch.randn(2, 5, 3)
    assert torch.equal(point_spec(5).to_grid(points)[:, :, 0, 0, :], points.transpose(1, 2))  # coordinates are C
    clip = torch.randn(2, 4, 3, 6, 7)
    assert torch.equal(video_spec(4, 6, 7).to_grid(clip), clip.transpose(1, 2))  # frames are T
    # a layout the built-in specs do not have: multichannel audio (S, C) needs no new code
    stereo = InputSpec(Modality.AUDIO, "B,S,2", (100, 2), (-1.0, 1.0), "amplitude", grid_axes=("W", "C"))
    waveforms = torch.randn(3, 100, 2)
    assert tuple(stereo.to_grid(waveforms).shape) == (3, 2, 1, 1, 100)
    assert torch.equal(stereo.from_grid(stereo.to_grid(waveforms)), waveforms)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"grid_axes": ("C", "H")}, "must name each of the 3 axes"),
        ({"grid_axes": ("C", "H", "H")}, "must name each of the 3 axes"),
        ({"grid_axes": ("C", "H", "X")}, "must name each of the 3 axes"),
        ({"window": "circle"}, "window must be one of contiguous, subset"),
        ({"window": "subset"}, "needs no H axis"),
        ({"purifier": "median"}, "purifier must be one of pixels, waveform, points"),
    ],
)
def test_bad_spec_declarations_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(image_spec(8, 8), **options)


def test_a_spec_without_grid_axes_says_how_to_fix_it() -> None:
    spec = InputSpec(Modality.IMAGE, "B,3,H,W", (3, 4, 4), (0.0, 1.0), "intensity")
    with pytest.raises(ConfigError, match="declares no grid_axes"):
        spec.to_grid(torch.rand(1, 3, 4, 4))


# --- the purifier ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_purifier_is_the_one_the_spec_declares(name: str) -> None:
    spec, _ = SPECS[name]
    purifier = Purifier(spec.purifier, spec.shape, spec.domain, project=spec.project, width=4)
    assert isinstance(purifier.denoiser, DENOISERS[spec.purifier])
    x = random_inputs(spec, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(purifier(x), x, atol=1e-6), "a fresh purifier is not the identity"


def test_purifier_projects_with_the_given_projection() -> None:
    spec = point_spec(16)
    purifier = Purifier(spec.purifier, spec.shape, spec.domain, project=spec.project)
    outside = torch.randn(2, 16, 3) * 3  # many points beyond the unit sphere
    with torch.no_grad():
        purified = purifier(outside)
    assert torch.allclose(purified, spec.project(outside))
    assert spec.out_of_domain(purified) <= 1e-6


def test_purifier_parameter_names_are_unchanged() -> None:
    """Saved calibration folders hold these names and shapes; changing them would orphan every saved purifier."""
    residual = "denoiser.residual"
    expected = {
        "pixels": {f"{residual}.0.weight": (16, 3, 3, 3), f"{residual}.2.weight": (16, 16, 3, 3)}
        | {f"{residual}.4.weight": (3, 16, 3, 3), f"{residual}.0.bias": (16,), f"{residual}.2.bias": (16,)}
        | {f"{residual}.4.bias": (3,)},
        "waveform": {f"{residual}.0.weight": (16, 1, 9), f"{residual}.2.weight": (16, 16, 9)}
        | {f"{residual}.4.weight": (1, 16, 9), f"{residual}.0.bias": (16,), f"{residual}.2.bias": (16,)}
        | {f"{residual}.4.bias": (1,)},
        "points": {"denoiser.local.0.weight": (32, 3), "denoiser.local.0.bias": (32,)}
        | {"denoiser.local.2.weight": (32, 32), "denoiser.local.2.bias": (32,)}
        | {"denoiser.displacement.0.weight": (32, 64), "denoiser.displacement.0.bias": (32,)}
        | {"denoiser.displacement.2.weight": (3, 32), "denoiser.displacement.2.bias": (3,)},
    }
    for spec in (image_spec(8, 8), audio_spec(64, 16_000), point_spec(8)):
        state = Purifier(spec.purifier, spec.shape, spec.domain, project=spec.project).state_dict()
        assert {name: tuple(tensor.shape) for name, tensor in state.items()} == expected[spec.purifier]


def test_purifier_refuses_a_kind_that_does_not_fit_the_shape() -> None:
    with pytest.raises(ConfigError, match=r"'points' purifier needs inputs of shape \(N, 3\)"):
        Purifier("points", (3, 8, 8), (0.0, 1.0))
    with pytest.raises(ConfigError, match="unknown purifier kind 'median'"):
        Purifier("median", (3, 8, 8), (0.0, 1.0))


# --- a new encoder with its own sizes -------------------------------------------------------------


class RandomLinearEncoder(Encoder):
    """A tiny encoder with sizes TinyBind does not have: 48-px images, 3-frame clips, 48 kHz audio, 100 points."""

    name = "random-linear"
    modalities = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.POINT)
    embed_dim = 8

    def __init__(self, *, image: InputSpec | None = None) -> None:
        super().__init__()
        self.specs = {
            Modality.IMAGE: image or image_spec(48, 48),
            Modality.VIDEO: video_spec(3, 12, 12),
            Modality.AUDIO: audio_spec(600, 48_000),
            Modality.POINT: point_spec(100),
        }
        generator = torch.Generator().manual_seed(0)
        self.towers = nn.ModuleDict()
        for modality, spec in self.specs.items():
            tower = nn.Linear(torch.Size(spec.shape).numel(), self.embed_dim)
            with torch.no_grad():
                tower.weight.copy_(torch.randn(tower.weight.shape, generator=generator))
            self.towers[modality.value] = tower

    def input_spec(self, modality: Modality) -> InputSpec:
        return self.specs[self.check_modality(modality)]

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        return self.towers[modality.value](x.flatten(1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("modality", RandomLinearEncoder.modalities)
def test_square_stays_in_budget_and_domain_on_new_sizes(modality: Modality, norm: str) -> None:
    encoder = RandomLinearEncoder().eval()
    spec = encoder.input_spec(modality)
    threat = ThreatModel.linf("8/255") if norm == "linf" else ThreatModel.l2(0.3)
    x = random_inputs(spec, 3, torch.Generator().manual_seed(2))
    before = x.clone()
    with torch.no_grad():
        context = ObjectiveContext(clean=encoder.encode_modality(modality, x))
    objective = EmbeddingDistortion(threshold=-2.0)  # never reached: the search spends every query
    result = Square(threat, objective=objective, queries=12).run(encoder, modality, x, context)
    assert torch.equal(x, before), "the clean input was modified"
    assert result.adversarial.shape == x.shape
    assert bool((result.norms <= threat.absolute(spec) * (1 + 1e-5)).all()), "a perturbation left the budget"
    assert spec.out_of_domain(result.adversarial) <= 1e-5, "an input left the domain"
    assert bool((result.norms > 0).all()), "the search never moved"
    assert result.forward_passes == len(x) * (1 + 12 + 1)


def test_calibration_builds_the_spec_declared_purifier() -> None:
    encoder = RandomLinearEncoder()
    config = CalibrationConfig(
        modality="point",
        method="purifier",
        objective="ce",
        threat={"norm": "linf", "eps": 4 / 255},
        options={"width": 8},
    )
    calibration = build_calibration(encoder, config)
    assert isinstance(calibration.purifier.denoiser, PointPurifier)
    points = random_inputs(encoder.input_spec(Modality.POINT), 2, torch.Generator().manual_seed(3))
    calibrated = CalibratedEncoder(encoder, {Modality.POINT: calibration})
    with torch.no_grad():
        assert torch.allclose(calibrated.encode_modality("point", points), encoder.encode_modality("point", points))


def test_calibration_refuses_a_purifier_the_spec_does_not_declare() -> None:
    encoder = RandomLinearEncoder(image=replace(image_spec(48, 48), purifier=None))
    config = CalibrationConfig(
        modality="image", method="purifier", objective="ce", threat={"norm": "linf", "eps": 4 / 255}
    )
    with pytest.raises(ConfigError, match="no purifier fits the image input"):
        build_calibration(encoder, config)
