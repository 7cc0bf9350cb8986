"""Proof (issue 9): a second, test-only encoder runs every generic job with no change to library code.

``SecondEncoder`` (tests/second_encoder.py) is a random ViT-style image tower at 224 px, an 8 kHz
audio tower and a byte-level text tower, unlike TinyBind in every size. It goes through
``evaluate``, every registered attack, ``calibrate`` with each method, save and load (with the
identity check), ``evaluate_calibration`` and the HTML report, using the public API only. Its
zero-shot accuracy is near chance (the weights are random), so the checks are about mechanics and
invariants (budget, domain, robust <= clean, round trips), not about accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import bindguard
from bindguard._types import Modality
from bindguard.calibration import PARTS, parse_method
from bindguard.data import Benchmark
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.centers import semantic_centers
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.objectives import ObjectiveContext
from bindguard.reports import build_report
from second_encoder import (
    AUDIO_SAMPLES,
    CLIP_MEAN,
    EXTRA_TOWERS,
    IMAGE_SIZE,
    LOGIT_SCALES,
    SAMPLE_RATE,
    SecondEncoder,
)

SEED, OTHER_SEED = 0, 1
EPS = "4/255"
PERCEPTUAL = (Modality.IMAGE, Modality.AUDIO)
SHAPES = {Modality.IMAGE: (3, IMAGE_SIZE, IMAGE_SIZE), Modality.AUDIO: (AUDIO_SAMPLES,)}
EVALUATE_OPTIONS = {
    "modalities": ["image", "audio"],  # "all" is broken for encoders without every modality (see below)
    "attacks": "standard",
    "eps": [EPS],
    "n": 6,
    "steps": 2,
    "square_queries": 5,
    "checks": True,
    "check_samples": 4,
    "batch_size": 8,
}
CALIBRATE_OPTIONS = {"limit": 16, "epochs": 1, "attack_steps": 1, "batch_size": 8}
METHODS = ("purifier", "lora", "head", "residual-head", "finetune", "purifier+lora")
# Few steps keep the file fast; every attack still runs its whole loop.
ATTACK_OPTIONS: dict[str, dict] = {"fgsm": {}, "square": {"queries": 5}, "apgd-t": {"steps": 2, "targets": 2}}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def encoder() -> SecondEncoder:
    return SecondEncoder(SEED)


@pytest.fixture(scope="module")
def test_data() -> Benchmark:
    """Two test samples per modality, rendered at the second encoder's sizes."""
    return bindguard.load_dataset(
        "builtin", split="test", modalities=list(PERCEPTUAL), limit=2, shapes=SHAPES, sample_rate=SAMPLE_RATE
    )


@pytest.fixture(scope="module")
def evaluated(encoder: SecondEncoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[bindguard.Results, Path]:
    out = tmp_path_factory.mktemp("evaluate")
    return bindguard.evaluate(encoder, "builtin", out=out, **EVALUATE_OPTIONS), out


@pytest.fixture(scope="module")
def calibration_folder(encoder: SecondEncoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A default-method image calibration, measured by ``evaluate_calibration`` into its own folder."""
    folder = tmp_path_factory.mktemp("calibration")
    calibrated = bindguard.calibrate(encoder, "builtin", modalities="image", out=folder, **CALIBRATE_OPTIONS)
    bindguard.evaluate_calibration(
        calibrated, "builtin", n=4, steps=2, square_queries=5, check_samples=2, batch_size=8, out=folder
    )
    return folder, folder / "results.json"


def state_equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    one, other = first.state_dict(), second.state_dict()
    return one.keys() == other.keys() and all(torch.equal(one[name], other[name]) for name in one)


# --- the encoder itself --------------------------------------------------------------------------


def test_same_seed_gives_same_identity_and_another_seed_another() -> None:
    first, again, other = SecondEncoder(SEED), SecondEncoder(SEED), SecondEncoder(OTHER_SEED)
    assert state_equal(first, again) and first.identity == again.identity
    assert first.identity != other.identity and first.text_identity != other.text_identity
    assert first.identity.startswith("second@")


def test_construction_leaves_the_global_random_state_alone() -> None:
    before = torch.get_rng_state()
    SecondEncoder(OTHER_SEED)
    assert torch.equal(torch.get_rng_state(), before)


def test_encoder_is_frozen_in_eval_mode_with_its_own_input_specs(encoder: SecondEncoder) -> None:
    assert encoder.name == "second" and encoder.modalities == (Modality.IMAGE, Modality.AUDIO, Modality.TEXT)
    assert not encoder.training and not any(module.training for module in encoder.modules())
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    image, audio = encoder.input_spec(Modality.IMAGE), encoder.input_spec(Modality.AUDIO)
    assert (image.shape, image.domain, image.mean) == ((3, 224, 224), (0.0, 1.0), CLIP_MEAN)
    assert (audio.shape, audio.domain, audio.sample_rate) == ((8000,), (-1.0, 1.0), 8000)
    assert encoder.num_parameters() == sum(p.numel() for p in encoder.parameters())
    assert not encoder.randomized and encoder.device == torch.device("cpu")


def test_extra_towers_are_opt_in_at_their_own_sizes_and_leave_the_base_towers_as_they_were() -> None:
    base, every = SecondEncoder(SEED), SecondEncoder(SEED, extra_towers=EXTRA_TOWERS)
    assert every.modalities == tuple(Modality) and every.identity != base.identity
    weights = every.state_dict()  # the base towers' weights are drawn first, so they are the same
    assert all(torch.equal(weights[name], tensor) for name, tensor in base.state_dict().items())
    assert not any(module.training for module in every.modules())
    assert not any(parameter.requires_grad for parameter in every.parameters())
    assert {modality.value: every.input_spec(modality).shape for modality in EXTRA_TOWERS} == {
        "event": (3, 2, 24, 40),
        "video": (3, 3, 224, 224),
        "depth": (1, 48, 64),
        "thermal": (1, 64, 48),
        "point": (192, 3),
    }
    assert len({every.logit_scale(modality) for modality in every.modalities}) == len(Modality)
    generator = torch.Generator().manual_seed(SEED)
    for modality in EXTRA_TOWERS:
        spec = every.input_spec(modality)
        x = spec.project(spec.domain[0] + spec.range * torch.rand(2, *spec.shape, generator=generator))
        x.requires_grad_(True)
        embedding = every.encode_modality(modality, x)  # (2, 32)
        torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
        (gradient,) = torch.autograd.grad(embedding[:, 0].sum(), x)
        assert bool((gradient.flatten(1).abs().sum(1) > 0).all()), f"{modality.value}: zero input gradient"
    with pytest.raises(ConfigError, match="got image, which the second encoder always has"):
        SecondEncoder(SEED, extra_towers=["image", "video"])


def test_embeddings_are_unit_norm_deterministic_and_differentiable_from_raw_input(
    encoder: SecondEncoder, test_data
) -> None:
    for modality in PERCEPTUAL:
        x = test_data.data[modality].inputs.clone().requires_grad_(True)
        embedding = encoder.encode_modality(modality, x)  # (2, 32)
        assert embedding.shape == (2, encoder.embed_dim)
        torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
        (gradient,) = torch.autograd.grad(embedding[:, 0].sum(), x)
        assert bool((gradient.flatten(1).abs().sum(1) > 0).all()), f"{modality.value}: zero input gradient"
        assert torch.equal(encoder.encode_modality(modality, x.detach()), embedding.detach())


def test_text_is_byte_level_and_cut_at_32_bytes(encoder: SecondEncoder) -> None:
    long = "a photo of the handwritten digit seven"  # 38 bytes: the tail is cut
    texts = [long, long[:32] + " (other tail)", "zero", "é"]
    embeddings = encoder.encode_modality(Modality.TEXT, texts)  # (4, 32)
    assert embeddings.shape == (4, encoder.embed_dim)
    torch.testing.assert_close(embeddings[0], embeddings[1])
    assert not torch.allclose(embeddings[2], embeddings[3])


def test_logit_scale_is_per_modality(encoder: SecondEncoder) -> None:
    assert encoder.logit_scale("image") == LOGIT_SCALES[Modality.IMAGE] == 50.0
    assert encoder.logit_scale(Modality.AUDIO) == LOGIT_SCALES[Modality.AUDIO] == 20.0
    with pytest.raises(UnknownNameError, match="no 'video' tower"):
        encoder.logit_scale("video")


# --- evaluate --------------------------------------------------------------------------------------


def test_builtin_benchmark_renders_at_the_encoders_input_sizes(test_data) -> None:
    image, audio = test_data.data[Modality.IMAGE].inputs, test_data.data[Modality.AUDIO].inputs
    assert image.shape == (2, 3, 224, 224) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert audio.shape == (2, 8000) and float(audio.min()) >= -1.0 and float(audio.max()) <= 1.0


def test_evaluate_gives_clean_retrieval_and_robust_rows_for_image_and_audio(encoder: SecondEncoder, evaluated) -> None:
    results, _ = evaluated
    relative = float(Fraction(EPS))
    for modality in PERCEPTUAL:
        name = modality.value
        (clean,) = [row for row in results.clean if row.modality == name]
        (robust,) = [row for row in results.robust if row.modality == name]
        directions = {(row.query, row.gallery) for row in results.retrieval if row.modality == name}
        assert directions == {("text", name), (name, "text")}
        assert clean.n == robust.n == EVALUATE_OPTIONS["n"]
        assert robust.clean_top1 == clean.top1 and robust.top1 <= robust.clean_top1
        assert robust.top5 <= robust.clean_top5
        assert robust.eps == pytest.approx(relative)
        assert robust.eps_abs == pytest.approx(relative * encoder.input_spec(modality).range)
        assert robust.max_norm <= robust.eps_abs * (1 + TOLERANCE)
        assert robust.attacks == ["apgd-ce", "apgd-t", "rank", "embed", "square"]
        assert robust.adaptive and (robust.steps, robust.square_queries) == (2, 5)
    assert results.model == "second" and results.settings["model_identity"] == encoder.identity


def test_evaluate_writes_results_that_read_back_the_same(evaluated) -> None:
    results, out = evaluated
    assert (out / "results.json").is_file()
    assert bindguard.Results.read(out / "results.json").to_dict() == results.to_dict()
    assert bindguard.Results.read(out).to_dict() == results.to_dict()


class RecordingEncoder(SecondEncoder):
    """Records which modalities' logit scales and which input shapes the library asks for."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.scales_asked: list[Modality] = []
        self.shapes_seen: set[tuple[Modality, tuple[int, ...]]] = set()

    def logit_scale(self, modality: Modality | str) -> float:
        self.scales_asked.append(Modality.parse(modality))
        return super().logit_scale(modality)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            self.shapes_seen.add((modality, tuple(x.shape[1:])))
        return super()._embed(modality, x)


def test_evaluation_and_calibration_use_the_encoders_logit_scale_and_input_sizes() -> None:
    recording = RecordingEncoder(SEED)
    options = {"eps": [EPS], "n": 2, "steps": 2, "square_queries": 0, "checks": False, "batch_size": 8}
    bindguard.evaluate(recording, "builtin", modalities=["image", "audio"], attacks="apgd-ce", **options)
    assert set(recording.scales_asked) == {Modality.IMAGE, Modality.AUDIO}
    assert recording.shapes_seen == {(Modality.IMAGE, (3, 224, 224)), (Modality.AUDIO, (8000,))}
    recording.scales_asked.clear()
    bindguard.calibrate(recording, "builtin", modalities="audio", method="head", **CALIBRATE_OPTIONS)
    assert recording.scales_asked and set(recording.scales_asked) == {Modality.AUDIO}


# --- every attack ------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", PERCEPTUAL, ids=lambda m: m.value)
@pytest.mark.parametrize("name", bindguard.list_attacks())
def test_attack_stays_in_budget_and_domain_and_restores_mode(name: str, modality: Modality, test_data) -> None:
    model = SecondEncoder(SEED)
    model.train()
    model.text.eval()  # mixed modes must come back as they were, module by module
    modes = {module_name: module.training for module_name, module in model.named_modules()}
    item = test_data.data[modality]
    x, labels = item.inputs[:2], item.labels[:2]
    original = x.clone()
    centers = semantic_centers(model, test_data.class_names, test_data.templates[modality], use_cache=False)
    context = ObjectiveContext(
        labels=labels,
        centers=centers,
        clean=model.encode_modality(modality, x).detach(),
        target=centers[(labels + 1) % len(centers)],  # cross-modal: onto another class's text embedding
        logit_scale=model.logit_scale(modality),
    )
    threat = bindguard.ThreatModel.linf(EPS)
    attack = bindguard.create_attack(name, threat=threat, **ATTACK_OPTIONS.get(name, {"steps": 2}))

    result = attack.run(model, modality, x, context)

    spec = model.input_spec(modality)
    budget = float(Fraction(EPS)) * spec.range
    assert result.adversarial.shape == x.shape
    assert float((result.adversarial - x).abs().max()) <= budget * (1 + TOLERANCE)
    assert float(result.norms.max()) <= budget * (1 + TOLERANCE)
    low, high = spec.domain
    assert low - TOLERANCE <= float(result.adversarial.min()) and float(result.adversarial.max()) <= high + TOLERANCE
    assert torch.equal(x, original), "the attack changed its input"
    assert {module_name: module.training for module_name, module in model.named_modules()} == modes
    assert result.success.shape == result.loss.shape == (2,) and result.forward_passes > 0


# --- calibrate, save, load ------------------------------------------------------------------------


def test_every_calibration_part_is_covered() -> None:
    # floor: this encoder's audio front end takes no logarithm, so the part is refused (the next test)
    assert {part for method in METHODS for part in parse_method(method)} | {"floor"} == set(PARTS)


def test_the_floor_part_is_refused_where_no_front_end_declares_a_floor(encoder: SecondEncoder, tmp_path: Path) -> None:
    assert encoder.log_floor(Modality.AUDIO) is None
    with pytest.raises(ConfigError, match="drop 'floor'"):
        bindguard.calibrate(
            encoder, "builtin", modalities="audio", method="floor", out=tmp_path / "floor", **CALIBRATE_OPTIONS
        )
    assert not (tmp_path / "floor" / "config.json").exists()


@pytest.mark.parametrize(
    ("method", "modality"),
    [(method, Modality.IMAGE) for method in METHODS] + [("purifier+lora", Modality.AUDIO)],
    ids=lambda value: value.value if isinstance(value, Modality) else value,
)
def test_calibration_trains_small_parts_saves_reloads_and_refuses_other_weights(
    method: str, modality: Modality, encoder: SecondEncoder, test_data, tmp_path: Path
) -> None:
    folder = tmp_path / method
    calibrated = bindguard.calibrate(
        encoder, "builtin", modalities=modality.value, method=method, out=folder, **CALIBRATE_OPTIONS
    )

    assert isinstance(calibrated, CalibratedEncoder) and set(calibrated.calibrations) == {modality.value}
    calibration = calibrated.calibration_of(modality)
    parts = parse_method(method)
    assert (calibration.purifier is not None) == ("purifier" in parts)
    assert (calibration.override is not None) == bool({"lora", "finetune"} & set(parts))
    assert (calibration.head is not None) == bool({"head", "residual-head"} & set(parts))
    assert 0 < calibration.trainable_parameters() < encoder.num_parameters()
    assert state_equal(encoder, SecondEncoder(SEED)), "calibrate changed the frozen encoder's weights"
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    reloaded = CalibratedEncoder.from_pretrained(SecondEncoder(SEED), folder)
    x = test_data.data[modality].inputs
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_modality(modality, x), calibrated.encode_modality(modality, x), rtol=0, atol=1e-6
        )
    with pytest.raises(DataError, match="other weights"):
        CalibratedEncoder.from_pretrained(SecondEncoder(OTHER_SEED), folder)


def test_evaluate_calibration_measures_before_and_after(encoder: SecondEncoder, calibration_folder) -> None:
    folder, results_file = calibration_folder
    results = bindguard.Results.read(results_file)
    (row,) = results.calibration
    assert row.modality == "image" and row.method == "purifier+lora" and row.n == 4
    assert row.eps_abs == pytest.approx(float(Fraction(EPS)))
    assert row.after["robust_top1"] <= row.after["clean_top1"]
    assert row.before["robust_top1"] <= row.before["clean_top1"]
    assert 0 < row.trainable_fraction < 1
    (robust,) = results.robust
    assert robust.calibration == str(folder) and robust.top1 <= robust.clean_top1
    assert results.settings["model_identity"].startswith(encoder.identity + "+calibration@")


def test_evaluate_applies_a_saved_calibration_folder(
    encoder: SecondEncoder, calibration_folder, tmp_path: Path
) -> None:
    folder, results_file = calibration_folder
    options = EVALUATE_OPTIONS | {"modalities": ["image"], "n": 4, "check_samples": 2}
    results = bindguard.evaluate(encoder, "builtin", calibration=folder, out=tmp_path, **options)
    (robust,) = results.robust
    assert robust.top1 <= robust.clean_top1
    assert results.settings["calibration"] == str(folder)
    (measured,) = bindguard.Results.read(results_file).calibration
    assert robust.clean_top1 == pytest.approx(measured.after["clean_top1"])  # same model, same four samples


# --- report ------------------------------------------------------------------------------------------


def test_report_is_built_for_the_evaluation_and_the_calibration(evaluated, calibration_folder) -> None:
    _, out = evaluated
    folder, _ = calibration_folder
    for directory in (out, folder):
        page = build_report(directory)
        assert page == directory / "report.html" and page.is_file()
        html = page.read_text()
        assert "second" in html and "image" in html
    assert "audio" in (out / "report.html").read_text()


def test_evaluate_all_modalities_takes_those_the_encoder_has(encoder: SecondEncoder) -> None:
    """``modalities="all"`` (the default) means every modality both the encoder and the data have."""
    results = bindguard.evaluate(encoder, "builtin", attacks=None, n=2, batch_size=8)
    assert {row.modality for row in results.clean} == {"image", "audio"}
