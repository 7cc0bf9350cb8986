"""Data sets with two or three classes: every attack and objective runs, losses stay finite, targets are capped.

The standard DLR losses read the 3rd and 4th best class; with fewer classes they fall back to the
smallest score (three classes) or the plain margin (two). From four classes on they must be
bit-identical to the published formulas, which are copied below as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack, list_attacks
from bindguard.attacks.apgd import APGDTargeted
from bindguard.data import Benchmark, ModalityData
from bindguard.encoders.base import Encoder
from bindguard.errors import ConfigError
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
from bindguard.evaluation.robust import RobustSettings, evaluate_robust
from bindguard.modalities import InputSpec, image_spec
from bindguard.objectives import ObjectiveContext, RankingPush, ZeroShotCE, ZeroShotDLR, ZeroShotTargetedDLR

SAMPLES = 4
EMBED_DIM = 8
THREATS = {"linf": ThreatModel.linf("8/255"), "l2": ThreatModel.l2(0.25)}
OPTIONS: dict[str, dict] = {"fgsm": {}, "square": {"queries": 5}}  # every other attack: two steps
CLASS_OBJECTIVES = (ZeroShotCE(), ZeroShotDLR(), ZeroShotTargetedDLR(), RankingPush())


class TinyRandomEncoder(Encoder):
    """A fixed random linear image tower on (3, 4, 4) pixels; class names "0", "1", ... embed as random rows."""

    name = "tiny-random"
    modalities = (Modality.IMAGE, Modality.TEXT)
    embed_dim = EMBED_DIM

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("image_weight", torch.randn(3 * 4 * 4, EMBED_DIM, generator=generator))
        self.register_buffer("text_table", torch.randn(16, EMBED_DIM, generator=generator))

    def input_spec(self, modality: Modality) -> InputSpec:
        self.check_modality(modality)
        return image_spec(4, 4, mean=None, std=None)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.text_table[[int(prompt) for prompt in x]]
        return (x.flatten(1) - 0.5) @ self.image_weight


@pytest.fixture(scope="module")
def encoder() -> TinyRandomEncoder:
    return TinyRandomEncoder().eval()


def zero_shot_case(encoder: TinyRandomEncoder, classes: int) -> tuple[torch.Tensor, ObjectiveContext]:
    """Random images labelled with the encoder's own predictions, with centers, clean and target embeddings."""
    generator = torch.Generator().manual_seed(classes)
    x = torch.rand(SAMPLES, 3, 4, 4, generator=generator)
    centers = F.normalize(encoder.text_table[:classes], dim=-1)  # (C, D)
    with torch.no_grad():
        clean = encoder.encode_modality(Modality.IMAGE, x)
    labels = (clean @ centers.T).argmax(1)
    target = F.normalize(torch.randn(SAMPLES, EMBED_DIM, generator=generator), dim=-1)
    return x, ObjectiveContext(labels=labels, centers=centers, clean=clean, target=target)


@pytest.mark.parametrize("norm", sorted(THREATS))
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_runs_on_two_and_three_classes(encoder, name: str, classes: int, norm: str) -> None:
    x, context = zero_shot_case(encoder, classes)
    threat = THREATS[norm]
    attack = create_attack(name, threat=threat, **OPTIONS.get(name, {"steps": 2}))
    result = attack.run(encoder, Modality.IMAGE, x, context)
    spec = encoder.input_spec(Modality.IMAGE)
    assert bool(torch.isfinite(result.loss).all()), result.loss
    assert result.success.shape == (SAMPLES,) and result.success.dtype == torch.bool
    assert bool((threat.norms(result.adversarial - x, spec) <= threat.absolute(spec) * (1 + 1e-5)).all())
    assert spec.out_of_domain(result.adversarial) <= 1e-5


@pytest.mark.parametrize("classes", [2, 3])
def test_class_objectives_are_finite_and_differentiable_with_few_classes(classes: int) -> None:
    generator = torch.Generator().manual_seed(0)
    embedding = F.normalize(torch.randn(6, EMBED_DIM, generator=generator), dim=-1).requires_grad_(True)
    centers = F.normalize(torch.randn(classes, EMBED_DIM, generator=generator), dim=-1)
    labels = torch.arange(6) % classes
    context = ObjectiveContext(labels=labels, centers=centers, target_labels=(labels + 1) % classes)
    tied = F.normalize(torch.ones(1, EMBED_DIM), dim=-1)  # equal scores can make a DLR denominator vanish
    tied_context = ObjectiveContext(
        labels=labels[:1], centers=tied.expand(classes, -1), target_labels=(labels[:1] + 1) % classes
    )
    for objective in CLASS_OBJECTIVES:
        loss = objective.loss(embedding, context)
        assert loss.shape == (6,) and bool(torch.isfinite(loss).all()), (objective.name, loss)
        (gradient,) = torch.autograd.grad(loss.sum(), embedding)
        assert bool(torch.isfinite(gradient).all()) and float(gradient.abs().sum()) > 0, objective.name
        assert bool(torch.isfinite(objective.loss(tied, tied_context)).all()), objective.name


def _published_dlr(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    ordered = scores.sort(dim=1, descending=True).values
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("-inf")).amax(1)
    return -(true - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def _published_targeted_dlr(scores: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    ordered = scores.sort(dim=1, descending=True).values
    true = scores.gather(1, labels[:, None]).squeeze(1)
    target = scores.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


@pytest.mark.parametrize("classes", [4, 5, 10])
def test_dlr_losses_are_bit_identical_to_the_published_ones_from_four_classes(classes: int) -> None:
    generator = torch.Generator().manual_seed(classes)
    embedding = F.normalize(torch.randn(32, EMBED_DIM, generator=generator), dim=-1)
    centers = F.normalize(torch.randn(classes, EMBED_DIM, generator=generator), dim=-1)
    labels = torch.randint(classes, (32,), generator=generator)
    targets = (labels + torch.randint(1, classes, (32,), generator=generator)) % classes
    context = ObjectiveContext(labels=labels, centers=centers, target_labels=targets)
    scores = embedding @ centers.T
    assert torch.equal(ZeroShotDLR().loss(embedding, context), _published_dlr(scores, labels))
    assert torch.equal(ZeroShotTargetedDLR().loss(embedding, context), _published_targeted_dlr(scores, labels, targets))


def test_dlr_fallbacks_for_two_and_three_classes() -> None:
    """Three classes: s_pi4 is the smallest score, s_pi3; two classes: the plain margin."""
    embedding = F.normalize(torch.tensor([[3.0, 2.0, 1.0]]), dim=-1)
    scores = embedding[0]  # centers are the unit axes, so the scores are the coordinates
    label, target = torch.tensor([1]), torch.tensor([0])
    three = ObjectiveContext(labels=label, centers=torch.eye(3), target_labels=target)
    spread = scores[0] - scores[2] + 1e-12
    assert torch.allclose(ZeroShotDLR().loss(embedding, three), -(scores[1] - scores[0]) / spread)
    assert torch.allclose(ZeroShotTargetedDLR().loss(embedding, three), -(scores[1] - scores[0]) / spread)
    two = ObjectiveContext(labels=label, centers=torch.eye(3)[:2], target_labels=target)
    assert torch.allclose(ZeroShotDLR().loss(embedding, two), -(scores[1] - scores[0]))
    assert torch.allclose(ZeroShotTargetedDLR().loss(embedding, two), -(scores[1] - scores[0]))


def test_targets_are_capped_at_the_other_classes(encoder, monkeypatch) -> None:
    attack = create_attack("apgd-t", threat=ThreatModel.linf("1/255"), steps=2, targets=3)
    assert isinstance(attack, APGDTargeted)
    assert [attack.targets_for(classes) for classes in (1, 2, 3, 4, 10)] == [0, 1, 2, 3, 3]
    x, context = zero_shot_case(encoder, 3)
    targeted: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = attack._single_run

    def recording(forward, objective, clean, spec, sub_context, *rest):
        targeted.append((sub_context.labels.clone(), sub_context.target_labels.clone()))
        return original(forward, objective, clean, spec, sub_context, *rest)

    monkeypatch.setattr(attack, "_single_run", recording)
    result = attack.run(encoder, Modality.IMAGE, x, context)
    assert 1 <= len(targeted) <= attack.targets_for(3)  # fewer where every sample fell to an earlier target
    for labels, targets in targeted:
        assert bool((targets != labels).all()), "the truth was chosen as a target"
    assert bool(torch.isfinite(result.loss).all())


def test_one_class_is_refused(encoder) -> None:
    x, context = zero_shot_case(encoder, 2)
    single = ObjectiveContext(labels=torch.zeros(SAMPLES, dtype=torch.long), centers=context.centers[:1])
    for name in ("apgd-ce", "apgd-dlr", "apgd-t", "rank"):
        with pytest.raises(ConfigError, match="at least 2 classes, got 1"):
            create_attack(name, threat=ThreatModel.linf("1/255"), steps=2).run(encoder, Modality.IMAGE, x, single)


def test_standard_ensemble_evaluates_a_two_class_data_set(encoder) -> None:
    x, context = zero_shot_case(encoder, 2)
    benchmark = Benchmark(
        name="two-classes",
        split="test",
        class_names=("0", "1"),
        templates={Modality.IMAGE: ("{}",)},
        data={Modality.IMAGE: ModalityData(x, context.labels, torch.arange(SAMPLES), "glyph")},
    )
    settings = RobustSettings(ensemble=STANDARD_ENSEMBLE, steps=2, square_queries=0, checks=False)
    (row,) = evaluate_robust(encoder, benchmark, [ThreatModel.linf("8/255")], settings=settings)
    assert list(row["after"]) == STANDARD_ENSEMBLE.attack_names
    assert row["n"] == SAMPLES and row["clean_top1"] == 1.0
    assert row["top1"] <= row["clean_top1"] and row["max_norm"] <= row["eps_abs"] * (1 + 1e-5)
    assert row["notes"] == ["apgd-t: 1 target class(es), not 3: the data has 2 classes"]
