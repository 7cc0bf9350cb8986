"""Property tests for every registered attack on the real TinyBind, in each modality's raw domain.

Each (attack, modality, norm) case is run once (cached for the module) on 4 samples with few steps,
then checked for: budget, domain, purity (input untouched), train/eval mode restored, reported
success and loss matching a recomputation, robust top-1 <= clean top-1, and seeded determinism.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.attacks import NORMS, Attack, AttackResult, ThreatModel, create_attack, list_attacks, parse_eps
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.errors import ConfigError, InvalidInputError, UnknownNameError
from bindguard.modalities import InputSpec
from bindguard.objectives import LogitCE, Objective, ObjectiveContext, ZeroShotCE

SAMPLES = 4
EPS = {"linf": "2/255", "l2": "0.1"}  # relative to each domain's range
TOLERANCE = 1e-5
# Few steps keep the file fast; every attack still runs its whole loop (restarts, checkpoints, targets).
OPTIONS: dict[str, dict] = {
    "fgsm": {},
    "pgd": {"steps": 3},
    "apgd-ce": {"steps": 3},
    "apgd-dlr": {"steps": 3},
    "apgd-t": {"steps": 3, "targets": 2},
    "embed": {"steps": 3},
    "rank": {"steps": 3},
    "cross-modal": {"steps": 3},
    "square": {"queries": 20},
}
TOP1_ATTACKS = {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square"}  # success: top-1 no longer the truth
UNTARGETED_ZERO_SHOT = TOP1_ATTACKS | {"rank"}
OTHER_MODALITIES = [m for m in PERCEPTUAL_MODALITIES if m is not Modality.IMAGE]


def _supports(name: str, norm: str) -> bool:
    """Whether a registered attack takes this norm: an attack may declare fewer norms than the threat model has.

    Builds the attack once at collection, so a registered attack whose module cannot be imported fails here.
    """
    try:
        create_attack(name, threat=ThreatModel.parse(norm, EPS[norm]), **OPTIONS.get(name, {}))
    except ConfigError as error:
        if "does not support norm" in str(error):
            return False
        raise
    return True


CASES = [(name, Modality.IMAGE, norm) for name in list_attacks() for norm in NORMS if _supports(name, norm)] + [
    (name, modality, norm)
    for modality in OTHER_MODALITIES
    for name in ("pgd", "apgd-ce", "rank")
    for norm in NORMS
    if _supports(name, norm)
]
CASE_IDS = [f"{name}-{modality.value}-{norm}" for name, modality, norm in CASES]


def subset(keep) -> dict:
    """Parametrize over the cases that satisfy ``keep(name, modality, norm)``."""
    chosen = [(case, case_id) for case, case_id in zip(CASES, CASE_IDS, strict=True) if keep(*case)]
    return {"argvalues": [case for case, _ in chosen], "ids": [case_id for _, case_id in chosen]}


# Reruns cost as much as the first run: check determinism on every attack once (image, Linf), on every
# modality once (PGD, Linf), and on the random L2 starts (image, point clouds) and Square's L2 search.
DETERMINISM = subset(
    lambda name, modality, norm: (
        (modality is Modality.IMAGE and norm == "linf")
        or (name == "pgd" and (norm == "linf" or modality in (Modality.IMAGE, Modality.POINT)))
        or (name == "square" and modality is Modality.IMAGE)
    )
)


def make_attack(name: str, threat: ThreatModel, **overrides) -> Attack:
    """Build a registered attack with this file's few-step options."""
    return create_attack(name, threat=threat, **(OPTIONS.get(name, {}) | overrides))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, OpenMP barriers waiting for a descheduled second thread made
    every op ~10 ms (a 64x64 EfficientNet forward went from 0.06 s to 3.7 s under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- shared data and cached runs


@dataclass
class Inputs:
    x: torch.Tensor
    labels: torch.Tensor
    centers: torch.Tensor
    clean: torch.Tensor  # unit-norm clean embeddings


@dataclass
class Run:
    name: str
    modality: Modality
    threat: ThreatModel
    spec: InputSpec
    attack: Attack
    x: torch.Tensor  # the tensor given to run (checked for mutation)
    x_before: torch.Tensor
    context: ObjectiveContext
    inputs: Inputs
    result: AttackResult
    training_after: bool
    every_module_training_after: bool


@pytest.fixture(scope="module")
def inputs(tinybind, test_benchmark) -> dict[Modality, Inputs]:
    """The first SAMPLES test samples of each modality that TinyBind classifies correctly: every attack has work to do."""
    prepared = {}
    for modality in PERCEPTUAL_MODALITIES:
        data = test_benchmark.data[modality]
        centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[modality])
        with torch.no_grad():
            right = (tinybind.encode_modality(modality, data.inputs[:32]) @ centers.T).argmax(1) == data.labels[:32]
        chosen = right.nonzero().flatten()[:SAMPLES]
        x, labels = data.inputs[chosen].clone(), data.labels[chosen].clone()
        with torch.no_grad():
            clean = tinybind.encode_modality(modality, x)
        prepared[modality] = Inputs(x, labels, centers, clean)
    return prepared


@pytest.fixture(scope="module")
def audio_targets(tinybind, test_benchmark, inputs) -> torch.Tensor:
    """For each image sample, the embedding of a spoken digit of another class (cross-modal targets)."""
    audio = test_benchmark.data[Modality.AUDIO]
    picks = [int((audio.labels != label).nonzero()[0]) for label in inputs[Modality.IMAGE].labels]
    with torch.no_grad():
        return tinybind.encode_modality(Modality.AUDIO, audio.inputs[picks])


def context_for(name: str, modality: Modality, inputs: dict[Modality, Inputs], audio_targets) -> ObjectiveContext:
    data = inputs[modality]
    if name == "cross-modal":  # image inputs moved onto the embeddings of sounds of other digits
        return ObjectiveContext(target=audio_targets, clean=data.clean)
    if name == "embed":  # label-free
        return ObjectiveContext(clean=data.clean)
    return ObjectiveContext(labels=data.labels, centers=data.centers, clean=data.clean)


@pytest.fixture(scope="module")
def run_case(tinybind, inputs, audio_targets):
    cache: dict[tuple, Run] = {}

    def run(name: str, modality: Modality, norm: str) -> Run:
        key = (name, modality, norm)
        if key not in cache:
            threat = ThreatModel.parse(norm, EPS[norm])
            attack = make_attack(name, threat)
            context = context_for(name, modality, inputs, audio_targets)
            x = inputs[modality].x.clone()
            x_before = x.clone()
            tinybind.train()  # the attack must put it in eval mode, then restore this
            try:
                result = attack.run(tinybind, modality, x, context)
                training_after = tinybind.training
                every_module_training_after = all(module.training for module in tinybind.modules())
            finally:
                tinybind.eval()
            cache[key] = Run(
                name,
                modality,
                threat,
                tinybind.input_spec(modality),
                attack,
                x,
                x_before,
                context,
                inputs[modality],
                result,
                training_after,
                every_module_training_after,
            )
        return cache[key]

    return run


def own_norms(delta: torch.Tensor, norm: str, modality: Modality) -> torch.Tensor:
    """Perturbation sizes computed independently of ThreatModel.norms."""
    if norm == "linf":
        return delta.reshape(delta.shape[0], -1).abs().max(dim=1).values
    if modality is Modality.POINT:  # per-point L2 budget: the worst point counts
        return torch.linalg.vector_norm(delta, dim=-1).max(dim=1).values
    return torch.linalg.vector_norm(delta.reshape(delta.shape[0], -1), dim=1)


def embed(tinybind, modality: Modality, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tinybind.encode_modality(modality, x)


# ---------------------------------------------------------------- per-case properties


@pytest.mark.parametrize(("name", "modality", "norm"), CASES, ids=CASE_IDS)
def test_result_is_well_formed(run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    result = run.result
    assert result.adversarial.shape == run.x.shape and result.adversarial.dtype == run.x.dtype
    assert not result.adversarial.requires_grad
    assert bool(torch.isfinite(result.adversarial).all())
    for field in (result.success, result.loss, result.norms):
        assert field.shape == (SAMPLES,)
    assert result.success.dtype == torch.bool
    # the final check of every sample and at least one gradient pass (a sample fooled by its random
    # start takes none: with early stopping, event samples can be)
    assert result.forward_passes >= SAMPLES + 1


@pytest.mark.parametrize(("name", "modality", "norm"), CASES, ids=CASE_IDS)
def test_perturbation_within_budget(run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    budget = run.threat.absolute(run.spec)
    assert budget == pytest.approx(parse_eps(EPS[norm]) * run.spec.range)
    delta = run.result.adversarial - run.x_before
    mine = own_norms(delta, norm, modality)
    theirs = run.threat.norms(delta, run.spec)
    assert bool((run.result.norms <= budget * (1 + TOLERANCE)).all()), (run.result.norms, budget)
    assert bool((mine <= budget * (1 + TOLERANCE)).all()), (mine, budget)
    assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-7)
    assert torch.allclose(run.result.norms, mine, rtol=1e-5, atol=1e-7), "reported norms disagree with adv - x"
    assert bool((mine > 0).any()), "the attack did not move any sample"


@pytest.mark.parametrize(("name", "modality", "norm"), CASES, ids=CASE_IDS)
def test_adversarial_stays_in_domain(run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    adversarial = run.result.adversarial
    assert run.spec.out_of_domain(adversarial) <= TOLERANCE
    if modality is Modality.POINT:
        assert float(adversarial.norm(dim=-1).max()) <= 1 + TOLERANCE, "a point left the unit ball"
    else:
        low, high = run.spec.domain
        assert float(adversarial.min()) >= low - TOLERANCE and float(adversarial.max()) <= high + TOLERANCE
    run.spec.validate(adversarial)  # the encoder accepts it as ordinary input


@pytest.mark.parametrize(("name", "modality", "norm"), CASES, ids=CASE_IDS)
def test_input_not_mutated_and_mode_restored(run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    assert torch.equal(run.x, run.x_before), "the attack modified its input tensor"
    assert run.training_after, "the encoder was in train() mode before the attack and is not after it"
    assert run.every_module_training_after, "some submodule was left in eval mode"


@pytest.mark.parametrize(("name", "modality", "norm"), CASES, ids=CASE_IDS)
def test_success_and_loss_match_recomputation(tinybind, run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    embedding = embed(tinybind, modality, run.result.adversarial)
    data, context = run.inputs, run.context
    if name in TOP1_ATTACKS:
        expected = (embedding @ data.centers.T).argmax(1) != data.labels
    elif name == "rank":
        top5 = (embedding @ data.centers.T).topk(run.attack.objective.top_k, dim=1).indices
        expected = ~(top5 == data.labels[:, None]).any(1)
    elif name == "embed":  # label-free: success means the cosine to the clean embedding fell below the threshold
        expected = (embedding * data.clean).sum(-1) < run.attack.objective.threshold
    elif name == "cross-modal":  # closer to the target sound than to its own clean embedding
        expected = (embedding * context.target).sum(-1) > (embedding * data.clean).sum(-1)
    else:  # an attack added later: at least consistent with its own objective
        expected = run.attack.objective.success(embedding, context)
    assert torch.equal(run.result.success, expected), (run.result.success, expected)
    assert torch.allclose(run.result.loss, run.attack.objective.loss(embedding, context), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "modality", "norm"), **subset(lambda name, *_: name in UNTARGETED_ZERO_SHOT))
def test_robust_top1_not_above_clean(tinybind, run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    data = run.inputs
    clean_correct = ((data.clean @ data.centers.T).argmax(1) == data.labels).sum()
    embedding = embed(tinybind, modality, run.result.adversarial)
    robust_correct = ((embedding @ data.centers.T).argmax(1) == data.labels).sum()
    assert int(robust_correct) <= int(clean_correct)


@pytest.mark.parametrize(("name", "modality", "norm"), **DETERMINISM)
def test_deterministic_under_the_same_seed(tinybind, run_case, name, modality, norm) -> None:
    run = run_case(name, modality, norm)
    torch.manual_seed(12345)  # the global generator must not matter: attacks draw from their own seed
    again = make_attack(name, run.threat).run(tinybind, modality, run.x_before.clone(), run.context)
    assert torch.equal(again.adversarial, run.result.adversarial)
    assert torch.equal(again.success, run.result.success)
    assert again.forward_passes == run.result.forward_passes


# ---------------------------------------------------------------- single-attack properties


def test_fgsm_moves_every_free_coordinate_by_exactly_eps(tinybind, inputs) -> None:
    data = inputs[Modality.IMAGE]
    threat = ThreatModel.linf("4/255")
    spec = tinybind.input_spec(Modality.IMAGE)
    context = ObjectiveContext(labels=data.labels, centers=data.centers)
    result = make_attack("fgsm", threat).run(tinybind, Modality.IMAGE, data.x, context)

    x = data.x.clone().requires_grad_(True)
    loss = ZeroShotCE().loss(tinybind.encode_modality(Modality.IMAGE, x), context)
    (gradient,) = torch.autograd.grad(loss.sum(), x)
    budget = threat.absolute(spec)
    delta = result.adversarial - data.x
    target = data.x + budget * gradient.sign()
    free = (gradient != 0) & (target >= 0) & (target <= 1)  # not saturated by the [0, 1] box
    assert float(free.float().mean()) > 0.5
    assert torch.allclose(delta[free].abs(), torch.full_like(delta[free], budget), rtol=0, atol=1e-6)
    assert torch.equal(delta[free].sign(), gradient[free].sign())
    saturated = (gradient != 0) & ~free  # pushed to the boundary, never past it
    assert torch.allclose(result.adversarial[saturated], target[saturated].clamp(0, 1), atol=1e-6)
    assert bool((delta[gradient == 0] == 0).all())


def test_rank_lowers_top5_at_least_as_much_as_apgd_ce(tinybind, test_benchmark) -> None:
    data = test_benchmark.data[Modality.IMAGE]
    x, labels = data.inputs[:16], data.labels[:16]
    centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[Modality.IMAGE])
    context = ObjectiveContext(labels=labels, centers=centers)
    threat = ThreatModel.linf("4/255")

    def top5(adversarial: torch.Tensor) -> int:
        indices = (embed(tinybind, Modality.IMAGE, adversarial) @ centers.T).topk(5, dim=1).indices
        return int((indices == labels[:, None]).any(1).sum())

    by_rank = top5(make_attack("rank", threat, steps=10).run(tinybind, Modality.IMAGE, x, context).adversarial)
    by_ce = top5(make_attack("apgd-ce", threat, steps=10).run(tinybind, Modality.IMAGE, x, context).adversarial)
    assert by_rank <= by_ce, f"top-5 hits after rank: {by_rank}/16, after apgd-ce: {by_ce}/16"


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("text", ["4//255", "abc", "", "4/", "1/0", "-1", "-0.1", "1E-2x"])
def test_parse_eps_rejects_malformed_text(text) -> None:
    with pytest.raises(ConfigError, match="malformed.*4/255"):
        parse_eps(text)


@pytest.mark.parametrize("value", [0, "0", "0/5", -0.5, float("nan"), float("inf")])
def test_parse_eps_rejects_non_positive_or_non_finite(value) -> None:
    with pytest.raises(ConfigError, match=r"must be > 0"):
        parse_eps(value)


@pytest.mark.parametrize("value", ["2", 2, 1.5, "1e5", "256/255"])
def test_linf_eps_larger_than_the_domain_is_refused_and_l2_takes_it(value) -> None:
    with pytest.raises(ConfigError, match="larger than the whole domain.*4/255"):
        ThreatModel.linf(value)
    assert ThreatModel.l2(value).eps == pytest.approx(parse_eps(value))  # an L2 norm over the input may exceed 1


@pytest.mark.parametrize(("text", "value"), [("4/255", 4 / 255), (" 8/255 ", 8 / 255), ("0.01", 0.01), ("1", 1.0)])
def test_parse_eps_accepts_fractions_and_numbers(text, value) -> None:
    assert parse_eps(text) == pytest.approx(value, rel=1e-12)
    threat = ThreatModel.parse(" LInf ", text)
    assert threat.norm == "linf" and threat.eps == pytest.approx(value, rel=1e-12)


def test_threat_model_errors() -> None:
    for bad in ("l1", "linf2", "L0"):
        with pytest.raises(ConfigError, match="unknown norm.*allowed: linf, l2"):
            ThreatModel.parse(bad, "4/255")
    with pytest.raises(ConfigError, match="unknown norm.*allowed: linf, l2"):
        ThreatModel("l3", 0.1)
    for bad in (0.0, -0.1, 2.0, float("nan")):
        with pytest.raises(ConfigError):
            ThreatModel("linf", bad)
    with pytest.raises(ConfigError, match="malformed"):
        ThreatModel.l2("abc")
    with pytest.raises(ConfigError, match="larger than the whole domain"):
        ThreatModel.linf("2")


def test_threat_model_constructor_parses_or_refuses_text_eps() -> None:
    with pytest.raises(ConfigError):
        ThreatModel("linf", "abc")
    assert isinstance(ThreatModel("linf", "0.5").eps, float)


def test_unknown_attack_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as caught:
        create_attack("nope", threat=ThreatModel.linf("4/255"))
    message = str(caught.value)
    assert "unknown attack 'nope'" in message
    for name in list_attacks():
        assert name in message
    with pytest.raises(UnknownNameError, match="did you mean 'apgd-ce'"):
        create_attack("apgd_ce", threat=ThreatModel.linf("4/255"))


def test_bad_options_and_contexts_are_config_errors(tinybind, inputs) -> None:
    threat = ThreatModel.linf("4/255")
    with pytest.raises(ConfigError, match="does not take these options"):
        create_attack("fgsm", threat=threat, steps=3)
    with pytest.raises(ConfigError, match="steps"):
        create_attack("pgd", threat=threat, steps=0)
    with pytest.raises(ConfigError, match="allowed: constant, cosine"):
        create_attack("pgd", threat=threat, schedule="linear")
    with pytest.raises(ConfigError, match="steps >= 2"):
        create_attack("apgd-ce", threat=threat, steps=1)
    data = inputs[Modality.IMAGE]
    with pytest.raises(ConfigError, match="needs target"):
        create_attack("cross-modal", threat=threat, steps=2).run(
            tinybind, Modality.IMAGE, data.x, ObjectiveContext(clean=data.clean)
        )
    with pytest.raises(InvalidInputError, match="text is discrete"):
        create_attack("pgd", threat=threat).run(tinybind, "text", data.x, ObjectiveContext())
    assert not tinybind.training


# ---------------------------------------------------------------- deviations found while testing


class _Scripted(Objective):
    """A loss whose values follow a script (its gradient is +1 everywhere), recording every iterate it sees."""

    name = "scripted"
    unit_norm = False

    def __init__(self, values: list[float]):
        self.values, self.seen = values, []

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        value = self.values[min(len(self.seen), len(self.values) - 1)]
        self.seen.append(embedding.detach().clone())
        total = (embedding * torch.ones_like(embedding)).sum(1)  # a materialised gradient of ones
        return total - total.detach() + value

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return torch.zeros(embedding.shape[0], dtype=torch.bool)


def test_apgd_does_not_halve_twice_when_the_loss_keeps_rising() -> None:
    """Croce & Hein 2020, condition 2: halve when eta(w_{j-1}) == eta(w_j) and f_max did not move.

    Scripted losses with 20 steps (checkpoints 5, 9, ...): the random start scores 10, steps 1-5 score 0
    (stalled: halve at 5, restart from the start point), steps 6-9 score 1, 2, 3, 4 (4/4 increases, no new
    max). Eta was reduced at checkpoint 5, so it must not be halved again at 9, nor the iterate sent back to
    the best point.
    """
    encoder = ClassifierEncoder(nn.Flatten(), height=2, width=2, classes=12, mean=None, std=None).eval()
    objective = _Scripted([10.0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9.5, 9.6, 9.7, 9.8, 9.9, 9.95, 0])
    attack = create_attack("apgd-ce", threat=ThreatModel.linf(0.25), steps=20, objective=objective)
    x = torch.full((1, 3, 2, 2), 0.5)
    attack.run(encoder, Modality.IMAGE, x, ObjectiveContext())
    start, top = objective.seen[0], x.flatten(1) + 0.25
    # after the halving at checkpoint 5 the iterate restarts from the best point (momentum reset):
    assert torch.allclose(objective.seen[6], start + 0.75 * (start + 0.25).clamp(max=top).sub(start))
    # at checkpoint 9 it must not: restarting would put it at start + 0.75 * min(eta / 4, room)
    restarted = start + 0.75 * (start + 0.125).clamp(max=top).sub(start)
    assert not torch.allclose(objective.seen[10], restarted), "APGD halved eta and restarted at checkpoint 9"


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_attacks_run_in_float64(name) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    encoder = ClassifierEncoder(model, height=2, width=2, classes=3, mean=None, std=None).eval()
    x = torch.rand(4, 3, 2, 2, dtype=torch.float64)
    labels = model(x).argmax(1).detach()
    attack = create_attack(name, threat=ThreatModel.linf("8/255"), steps=2, objective=LogitCE())
    result = attack.run(encoder, Modality.IMAGE, x, ObjectiveContext(labels=labels))
    assert result.adversarial.dtype == torch.float64


def test_attack_restores_mixed_submodule_modes(tinybind, inputs) -> None:
    data = inputs[Modality.POINT]
    context = ObjectiveContext(labels=data.labels, centers=data.centers)
    tinybind.eval()
    tinybind.heads.train()
    tinybind.point_net.train()
    before = {name: module.training for name, module in tinybind.named_modules()}
    try:
        make_attack("fgsm", ThreatModel.linf("2/255")).run(tinybind, Modality.POINT, data.x, context)
        after = {name: module.training for name, module in tinybind.named_modules()}
    finally:
        tinybind.eval()
    changed = sorted(name for name in before if before[name] != after[name])
    assert not changed, f"modes changed by the attack: {changed[:5]}"


def test_apgd_with_early_stop_reaches_the_same_verdicts_in_fewer_passes(tinybind, test_benchmark) -> None:
    """Stopping a sample once it is fooled cannot unfool it: the best iterate is kept."""
    from bindguard.encoders.centers import benchmark_centers
    from bindguard.objectives import ObjectiveContext

    data = test_benchmark.data[Modality.IMAGE]
    x, labels = data.inputs[:16], data.labels[:16]
    centers = benchmark_centers(tinybind, test_benchmark, Modality.IMAGE)
    context = ObjectiveContext(labels=labels, centers=centers, logit_scale=tinybind.logit_scale(Modality.IMAGE))
    threat = ThreatModel.linf("4/255")
    full = create_attack("apgd-ce", threat=threat, steps=10).run(tinybind, Modality.IMAGE, x, context)
    quick = create_attack("apgd-ce", threat=threat, steps=10, early_stop=True).run(tinybind, Modality.IMAGE, x, context)
    assert bool(full.success.all()) and torch.equal(full.success, quick.success)
    assert quick.forward_passes < full.forward_passes  # at 4/255 every sample falls in the first steps


def _linear_classifier(samples: int) -> tuple[ClassifierEncoder, torch.Tensor, ObjectiveContext]:
    """A float64 linear classifier: each sample's path is the same alone or in any batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    encoder = ClassifierEncoder(model, height=2, width=2, classes=3, mean=None, std=None).eval()
    x = torch.rand(samples, 3, 2, 2, dtype=torch.float64)
    return encoder, x, ObjectiveContext(labels=model(x).argmax(1).detach())


@pytest.mark.parametrize("early_stop", [False, True])
def test_continuous_batching_pgd_equals_batch_pgd_from_the_same_starts(early_stop) -> None:
    from bindguard.attacks.pgd import PGD

    encoder, x, context = _linear_classifier(10)
    threat = ThreatModel.linf("24/255")
    options = {"steps": 5, "random_start": False, "objective": LogitCE(), "early_stop": early_stop}
    options["schedule"] = "cosine"  # a step size that differs per step: each row must use its own
    whole = PGD(threat, **options).run(encoder, Modality.IMAGE, x, context)
    streamed = PGD(threat, batch_size=3, **options).run(encoder, Modality.IMAGE, x, context)
    assert 0 < int(whole.success.sum()) < 10, "the case should have samples that fall and samples that resist"
    assert torch.equal(whole.adversarial, streamed.adversarial)
    assert torch.equal(whole.success, streamed.success)
    assert torch.allclose(whole.loss, streamed.loss)
    assert whole.forward_passes == streamed.forward_passes


def test_continuous_batching_keeps_calls_full_until_no_sample_waits(monkeypatch) -> None:
    from bindguard.attacks.pgd import PGD

    encoder, x, context = _linear_classifier(23)
    sizes: list[int] = []
    encode = encoder.encode_modality

    def recording(modality, inputs, **options):
        sizes.append(inputs.shape[0])
        return encode(modality, inputs, **options)

    monkeypatch.setattr(encoder, "encode_modality", recording)
    attack = PGD(ThreatModel.linf("24/255"), steps=6, batch_size=4, objective=LogitCE())
    result = attack.run(encoder, Modality.IMAGE, x, context)
    assert max(sizes) == 4 and sum(sizes) == result.forward_passes
    first_short = next(i for i, size in enumerate(sizes) if size < 4)
    assert sizes[first_short:] == sorted(sizes[first_short:], reverse=True), "a call grew after the queue drained"
    assert bool(result.success.any()) and not bool(result.success.all())


def test_continuous_batching_runs_every_restart_of_every_sample() -> None:
    from bindguard.attacks.pgd import PGD

    encoder, x, context = _linear_classifier(7)
    attack = PGD(ThreatModel.linf("1/255"), steps=3, restarts=2, batch_size=3, early_stop=False, objective=LogitCE())
    result = attack.run(encoder, Modality.IMAGE, x, context)
    assert result.forward_passes == 7 * 2 * (3 + 1)  # per restart: 3 evaluated steps and the final iterate


def test_continuous_batching_refuses_a_share_of_a_batch_and_empty_rows() -> None:
    from bindguard.attacks.pgd import PGD

    threat = ThreatModel.linf("1/255")
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        PGD(threat, batch_size=0)
    with pytest.raises(ConfigError, match="exclude each other"):
        PGD(threat, batch_size=4, early_stop=False, within=(0, 8))
