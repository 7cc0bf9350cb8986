"""Square attack: budget, domain, purity, determinism and effectiveness, from forward passes alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.attacks.square import Square, square_fraction
from bindguard.encoders.base import Encoder
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec, audio_spec, image_spec, point_spec, video_spec
from bindguard.objectives import EmbeddingDistortion, LogitCE, ObjectiveContext, ZeroShotCE

NORMS = ("linf", "l2")
THREATS = {"linf": ThreatModel.linf("8/255"), "l2": ThreatModel.l2(0.25)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # many tiny forward passes: on shared cores, thread hand-offs cost more than they save
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tinybind_batches(tinybind, test_benchmark) -> dict[Modality, tuple[torch.Tensor, ObjectiveContext]]:
    """Four held-out samples per modality with their zero-shot context."""
    batches = {}
    for modality in PERCEPTUAL_MODALITIES:
        data = test_benchmark.data[modality]
        centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[modality])
        batches[modality] = (data.inputs[:4].clone(), ObjectiveContext(labels=data.labels[:4], centers=centers))
    return batches


def smooth_linear_classifier(generator: torch.Generator) -> ClassifierEncoder:
    """A linear 10-class model on 3x8x8 inputs whose weights vary smoothly in space, like natural-image models."""
    weight = F.interpolate(torch.randn(10, 3, 2, 2, generator=generator), size=(8, 8), mode="nearest")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1) / 8)
        model[1].bias.zero_()
    return ClassifierEncoder(model, height=8, width=8, classes=10, mean=(0.5,) * 3, std=(1.0,) * 3)


class GradientFreeProbe(nn.Module):
    """A tiny conv classifier that records whether autograd was on at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 10)
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.head(self.net(x))


class LinearMultiModal(Encoder):
    """Small random linear towers for four layouts, to check Square's structure where nothing clips."""

    name = "linear-multimodal"
    modalities = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.POINT)
    embed_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.specs = {
            Modality.IMAGE: image_spec(8, 8),
            Modality.VIDEO: video_spec(3, 8, 8),
            Modality.AUDIO: audio_spec(400, 16_000),
            Modality.POINT: point_spec(32),
        }
        generator = torch.Generator().manual_seed(0)
        self.weights = {
            modality: torch.randn(torch.Size(spec.shape).numel(), self.embed_dim, generator=generator)
            for modality, spec in self.specs.items()
        }

    def input_spec(self, modality: Modality) -> InputSpec:
        return self.specs[self.check_modality(modality)]

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        return x.flatten(1) @ self.weights[modality]


def mid_domain_batch(spec: InputSpec, count: int = 3) -> torch.Tensor:
    """Inputs far from the domain's edges, so that no clipping hides Square's own structure."""
    noise = torch.rand((count, *spec.shape)) - 0.5
    if spec.modality is Modality.POINT:
        return 0.5 * F.normalize(noise, dim=-1) * torch.rand((count, spec.shape[0], 1))
    return sum(spec.domain) / 2 + 0.1 * spec.range * noise


# --- configuration and schedule ------------------------------------------------------------------


def test_created_by_name_with_its_defaults_and_declared_gradient_free() -> None:
    attack = create_attack("square", threat=ThreatModel.linf("4/255"), queries=50)
    assert isinstance(attack, Square) and not attack.uses_gradients
    assert attack.queries == 50 and attack.p_init == 0.8
    assert Square(ThreatModel.l2(0.5)).p_init == 0.3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queries": 0}, r"queries must be an integer >= 1"),
        ({"queries": 2.5}, r"queries must be an integer >= 1"),
        ({"p_init": 0.0}, r"p_init must be a number in \(0, 1\]"),
        ({"p_init": 1.5}, r"p_init must be a number in \(0, 1\]"),
        ({"restarts": 0}, r"restarts must be an integer >= 1"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Square(ThreatModel.linf("4/255"), **options)


def test_unsupported_norm_is_refused() -> None:
    with pytest.raises(ConfigError, match="allowed: linf, l2"):
        Square(ThreatModel("l1", 0.1))
    threat = ThreatModel.linf("4/255")
    object.__setattr__(threat, "norm", "l0")  # slip past the threat model's own check
    with pytest.raises(ConfigError, match="allowed: linf, l2"):
        Square(threat)


def test_square_fraction_halves_on_the_paper_schedule() -> None:
    assert square_fraction(0, 10_000, 0.8) == square_fraction(10, 10_000, 0.8) == 0.8
    assert square_fraction(11, 10_000, 0.8) == 0.4
    assert square_fraction(201, 10_000, 0.8) == 0.1
    assert square_fraction(9_999, 10_000, 0.8) == 0.8 / 512
    # other budgets are rescaled to 10,000 queries: iteration 2 of 1000 is iteration 20 of 10,000
    assert square_fraction(1, 1_000, 0.8) == 0.8 and square_fraction(2, 1_000, 0.8) == 0.4


@pytest.mark.parametrize("modality", LinearMultiModal.modalities)
def test_grid_view_round_trips(modality: Modality) -> None:
    spec = LinearMultiModal().input_spec(modality)
    x = torch.rand((2, *spec.shape))
    assert spec.to_grid(x).dim() == 5
    assert torch.equal(spec.from_grid(spec.to_grid(x)), x)


# --- properties on TinyBind, every modality and norm -----------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("modality", PERCEPTUAL_MODALITIES)
def test_properties_on_tinybind(tinybind, tinybind_batches, modality: Modality, norm: str) -> None:
    x, context = tinybind_batches[modality]
    before = x.clone()
    spec, threat = tinybind.input_spec(modality), THREATS[norm]
    tinybind.train()
    try:
        result = Square(threat, queries=20).run(tinybind, modality, x, context)
        assert tinybind.training, "the encoder's mode was not restored"
    finally:
        tinybind.eval()
    assert torch.equal(x, before), "the clean input was modified"
    assert result.adversarial.shape == x.shape
    assert bool((result.norms <= threat.absolute(spec) * (1 + 1e-5)).all())
    assert torch.allclose(result.norms, threat.norms(result.adversarial - x, spec))
    assert spec.out_of_domain(result.adversarial) <= 1e-5
    # one clean query, at most 20 per sample in the run, and the base class's final check
    assert 2 * len(x) <= result.forward_passes <= 22 * len(x)

    with torch.no_grad():
        clean = tinybind.encode_modality(modality, x)
        final = tinybind.encode_modality(modality, result.adversarial)
    objective = ZeroShotCE()
    assert torch.equal(result.success, objective.success(final, context))
    assert torch.allclose(result.loss, objective.loss(final, context), atol=1e-5)
    clean_correct = ~objective.success(clean, context)
    assert not bool((~result.success & ~clean_correct).any()), "robust accuracy exceeds clean accuracy"
    # a sample that is not beaten ends at its best loss, never below the clean one (a beaten one may end lower)
    not_lower = result.loss >= objective.loss(clean, context) - 1e-5
    assert bool((not_lower | result.success).all()), "the loss fell below the clean one"

    again = Square(threat, queries=20).run(tinybind, modality, x, context)
    other = Square(threat, queries=20, seed=1).run(tinybind, modality, x, context)
    assert torch.equal(again.adversarial, result.adversarial), "not deterministic under the seed"
    assert not torch.equal(other.adversarial, result.adversarial), "the seed has no effect"


# --- structure of the search ---------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("modality", LinearMultiModal.modalities)
def test_iterates_stay_on_the_budget_boundary(modality: Modality, norm: str) -> None:
    """Away from the domain's edges every coordinate sits at +-eps (Linf) and the norm at eps (L2)."""
    encoder = LinearMultiModal()
    spec, threat = encoder.input_spec(modality), ThreatModel(norm, 4 / 255 if norm == "linf" else 0.05)
    x = mid_domain_batch(spec)
    with torch.no_grad():
        clean = encoder.encode_modality(modality, x)
    # never successful, and any move away from the clean embedding scores higher, so the search runs to the end
    objective = EmbeddingDistortion(threshold=-2.0)
    result = Square(threat, objective=objective, queries=40).run(encoder, modality, x, ObjectiveContext(clean=clean))
    assert result.forward_passes == len(x) * (1 + 40 + 1)
    delta, budget = result.adversarial - x, threat.absolute(spec)
    if norm == "linf":
        assert torch.allclose(delta.abs(), torch.full_like(delta, budget), rtol=1e-4)
    elif modality is Modality.POINT:
        assert torch.allclose(delta.norm(dim=-1), torch.full(delta.shape[:2], budget), rtol=1e-4)
    else:
        assert torch.allclose(result.norms, torch.full_like(result.norms, budget), rtol=1e-4)
    if modality is Modality.VIDEO:
        assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6), "the video perturbation is not one tube"


def test_restarts_search_again_and_keep_the_first_runs_best() -> None:
    encoder = LinearMultiModal()
    spec, threat = encoder.input_spec(Modality.IMAGE), ThreatModel.l2(0.05)
    x = mid_domain_batch(spec)
    with torch.no_grad():
        context = ObjectiveContext(clean=encoder.encode_modality(Modality.IMAGE, x))
    objective = EmbeddingDistortion(threshold=-2.0)
    once = Square(threat, objective=objective, queries=10).run(encoder, Modality.IMAGE, x, context)
    twice = Square(threat, objective=objective, queries=10, restarts=2).run(encoder, Modality.IMAGE, x, context)
    assert twice.forward_passes == len(x) * (1 + 2 * 10 + 1)
    assert bool((twice.loss >= once.loss - 1e-6).all()), "a restart lost the first run's best"
    assert bool((twice.norms <= threat.absolute(spec) * (1 + 1e-5)).all())


@pytest.mark.parametrize("modality", LinearMultiModal.modalities)
def test_linf_candidate_changes_one_window(modality: Modality) -> None:
    """A candidate differs from the current perturbation inside a square, a 1-D window or a subset of points.

    Reaches into ``_start`` and ``_candidate``: the window's shape is not visible in a finished run.
    """
    spec, threat = LinearMultiModal().input_spec(modality), ThreatModel.linf("4/255")
    attack = Square(threat)
    x = mid_domain_batch(spec, count=8)
    generator = torch.Generator().manual_seed(0)
    delta = attack._start(x, spec, generator)
    fraction = 0.1
    changed = spec.to_grid((attack._candidate(x, delta, spec, fraction, generator) - delta).abs() > 1e-6)
    assert bool(changed.flatten(1).any(1).all()), "a candidate repeated the current perturbation"
    where = changed.any(dim=(1, 2))  # (B, H, W): window positions, shared by channels and frames
    if modality is Modality.POINT:
        assert bool((where.flatten(1).sum(1) <= round(fraction * spec.shape[0])).all())
        return
    for plane in where:
        rows, cols = plane.nonzero().unbind(1)
        height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        if modality is Modality.AUDIO:
            assert width <= round(fraction * spec.shape[0])
        else:
            side = round((fraction * 8 * 8) ** 0.5)
            assert height <= side and width <= side
    if modality is Modality.VIDEO:
        frames = changed.any(dim=1)  # (B, T, H, W)
        assert torch.equal(frames, frames[:, :1].expand_as(frames)), "the window moved between frames"


def test_only_forward_passes_and_only_unbeaten_samples() -> None:
    torch.manual_seed(0)
    probe = GradientFreeProbe()
    encoder = ClassifierEncoder(probe, height=8, width=8, classes=10)
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        prediction = encoder.encode_modality("image", x, normalize=False).argmax(1)
    # already misclassified samples cost the clean query and the final check only
    wrong = ObjectiveContext(labels=(prediction + 1) % 10)
    result = Square(ThreatModel.linf("8/255"), objective=LogitCE(), queries=50).run(encoder, "image", x, wrong)
    assert bool(result.success.all()) and result.forward_passes == 2 * len(x)
    assert torch.equal(result.adversarial, x)
    result = Square(ThreatModel.l2(0.5), objective=LogitCE(), queries=30).run(
        encoder, "image", x, ObjectiveContext(labels=prediction)
    )
    assert len(x) * 2 <= result.forward_passes <= len(x) * 32
    assert probe.grad_enabled and not any(probe.grad_enabled), "Square ran the model with autograd on"


# --- effectiveness where the answer is known --------------------------------------------------------


@pytest.mark.parametrize(("norm", "eps", "fooled"), [("linf", 8 / 255, 0.85), ("l2", 0.5, 0.65)])
def test_fools_a_linear_classifier(norm: str, eps: float, fooled: float) -> None:
    """Every sample can be flipped inside the budget (the exact minimal perturbations are smaller); Square finds most."""
    generator = torch.Generator().manual_seed(0)
    encoder = smooth_linear_classifier(generator)
    x = torch.rand(32, 3, 8, 8, generator=generator)
    with torch.no_grad():
        logits = encoder.encode_modality("image", x, normalize=False)
    labels = logits.argmax(1)
    weight = encoder.model[1].weight
    gaps = logits.gather(1, labels[:, None]) - logits  # (B, C) margins to beat
    dual = 1 if norm == "linf" else 2  # the dual norm measures how fast a margin shrinks per unit of budget
    slopes = (weight[None] - weight[labels][:, None]).norm(p=dual, dim=-1).scatter(1, labels[:, None], 1.0)
    minimal = (gaps / slopes).scatter(1, labels[:, None], float("inf")).amin(1)
    assert bool((minimal < eps).all()), "the test's premise: every sample is breakable"

    context = ObjectiveContext(labels=labels)
    threat = ThreatModel(norm, eps)
    start_only = Square(threat, objective=LogitCE(), queries=1).run(encoder, "image", x, context)
    result = Square(threat, objective=LogitCE(), queries=300).run(encoder, "image", x, context)
    assert result.success.float().mean() >= fooled  # measured over seeds 0-4: linf 0.91-0.94, l2 0.69-0.81
    assert result.success.sum() > start_only.success.sum(), "the search did no better than its starting point"
    clean_loss = LogitCE().loss(logits, context)
    # unbeaten samples keep their best loss; a beaten one stops at its first success, whatever its loss
    assert bool((result.loss >= clean_loss - 1e-6)[~result.success].all()), "the loss fell below the clean loss"
    assert (result.loss > clean_loss).float().mean() >= 0.8
