"""Calibration recipes: shipped data files, phases that train what they name, resume across phases,
per-modality overrides, the distill and stable objectives, and the spectral gate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bindguard._types import Modality
from bindguard.calibration.purifiers import Purifier, SpectralGate
from bindguard.cli.main import app
from bindguard.encoders.centers import semantic_centers
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.objectives.calibration import CalibrationBatch, calibration_loss
from bindguard.training.calibrate import calibrate_modality
from bindguard.training.recipe import CalibrationRecipe, load_recipe, read_recipe_file, shipped_recipes

TWO_PHASES = dict(
    method="purifier+lora",
    batch_size=16,
    eps="8/255",
    phases=[
        {"name": "warm", "objective": "distill", "epochs": 1, "train": ["purifier"]},
        {"name": "adversarial", "objective": "ce", "epochs": 2, "attack_steps": 1, "learning_rate": 1e-3},
    ],
)


def _train(tinybind, test_benchmark, recipe: CalibrationRecipe, modality: Modality = Modality.POINT, **kwargs):
    data = test_benchmark.data[modality]
    centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[modality])
    return calibrate_modality(tinybind, modality, data.inputs[:48], data.labels[:48], centers, recipe, **kwargs)


def test_every_shipped_recipe_loads_and_standard_is_the_default() -> None:
    shipped = shipped_recipes()
    assert {"standard", "calmars"} <= set(shipped)
    for name, path in shipped.items():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe == read_recipe_file(path)
        for modality in Modality:
            if modality.value in recipe.modalities or not recipe.modalities:
                assert recipe.for_modality(modality).schedule()  # every phase resolves and checks
    assert load_recipe("standard") == CalibrationRecipe(name="standard")


def test_calmars_is_clean_distillation_then_growing_adversarial_phases() -> None:
    phases = load_recipe("calmars").schedule()
    assert phases[0].objective == "distill"
    adversarial = phases[1:]
    assert all(phase.objective in ("ce", "stable", "l2") for phase in adversarial)
    budgets = [phase.threat.eps for phase in adversarial]
    steps = [phase.attack_steps for phase in adversarial]
    assert budgets == sorted(budgets) and budgets[0] < budgets[-1]
    assert steps == sorted(steps) and steps[0] < steps[-1]


def test_list_recipes_prints_every_shipped_recipe() -> None:
    result = CliRunner().invoke(app, ["calibrate", "--list-recipes"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in shipped_recipes():
        assert name in result.output


def test_list_recipes_gives_the_epochs_of_a_modality_whose_phases_differ() -> None:
    recipe = load_recipe("calmars")
    image = recipe.for_modality(Modality.IMAGE).total_epochs
    assert image != recipe.total_epochs  # calmars trains image's last phase longer
    result = CliRunner().invoke(app, ["calibrate", "--list-recipes"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"{recipe.total_epochs} (image: {image};" in result.output


def test_unknown_recipe_and_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'calmars'"):
        load_recipe("calmar")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_recipe(bad)
    bad.write_text(json.dumps({"phases": [{"objective": "ce", "epoch": 2}]}))
    with pytest.raises(ConfigError, match="phase 1 of recipe 'bad' sets 'epoch'"):
        load_recipe(bad)
    bad.write_text(json.dumps({"phases": [{"train": ["head"]}]}))
    with pytest.raises(ConfigError, match="trains"):
        load_recipe(bad)
    bad.write_text(json.dumps({"modalities": {"point": {"epochz": 3}}}))
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_recipe(bad)
    bad.write_text(json.dumps({"phases": [{"eps": "nan"}]}))
    with pytest.raises(ConfigError):
        load_recipe(bad)


def test_a_flag_that_every_phase_overrides_is_refused() -> None:
    recipe = CalibrationRecipe(**TWO_PHASES)
    with pytest.raises(ConfigError, match="sets epochs in each of its phases"):
        recipe.with_settings(epochs=3)
    assert recipe.with_settings(attack_steps=3).schedule()[0].attack_steps == 3  # the warm phase inherits it
    assert recipe.with_settings(seed=5).seed == 5


def test_per_modality_overrides_apply_to_that_modality_only() -> None:
    recipe = CalibrationRecipe(modalities={"point": {"method": "finetune", "epochs": 7}})
    assert recipe.for_modality(Modality.POINT).method == "finetune"
    assert recipe.for_modality(Modality.POINT).total_epochs == 7
    assert recipe.for_modality(Modality.IMAGE).method == "purifier+lora"
    assert recipe.for_modality(Modality.IMAGE).total_epochs == 4


def test_a_setting_given_over_a_recipe_applies_to_every_modality() -> None:
    calmars = load_recipe("calmars")
    assert calmars.for_modality(Modality.POINT).learning_rate == 0.001  # the file's override
    faster = calmars.with_settings(learning_rate=0.01)
    assert all(faster.for_modality(m).learning_rate == 0.01 for m in Modality if m != Modality.TEXT)
    assert faster.for_modality(Modality.POINT).method == "purifier+finetune"  # the rest of the override stays
    phases = [{"name": "only", "objective": "ce", "eps": "4/255", "attack_steps": 2, "epochs": 3}]
    given = calmars.with_settings(phases=phases)
    assert given.for_modality(Modality.IMAGE).phases == phases  # image's own phases no longer win
    assert given.for_modality(Modality.IMAGE).total_epochs == 3
    assert "image" not in given.modalities  # its override held phases alone


def test_a_phase_trains_only_the_parts_it_names(tinybind, test_benchmark) -> None:
    recipe = CalibrationRecipe(**(TWO_PHASES | {"phases": TWO_PHASES["phases"][:1]}))
    calibration = _train(tinybind, test_benchmark, recipe).calibration
    assert all(float(up.abs().sum()) == 0 for up in calibration.override.up.values())  # LoRA untouched
    assert all(float(shift.abs().sum()) == 0 for shift in calibration.override.shifts.values())
    moved = [p for p in calibration.purifier.parameters() if float(p.abs().sum()) > 0]
    assert moved  # the purifier's zero-initialised last layer learned something
    assert calibration.config.objective == "distill"


def test_phases_resume_to_the_same_calibration(tinybind, test_benchmark, tmp_path: Path) -> None:
    recipe = CalibrationRecipe(**TWO_PHASES)
    whole = _train(tinybind, test_benchmark, recipe)
    assert len(whole.losses) == 3 and whole.calibration.config.objective == "distill>ce"
    assert whole.calibration.config.recipe["phases"] == TWO_PHASES["phases"]

    def stop_in_second_phase(stage: str, done: int, total: int) -> None:
        if stage.endswith("calibrate") and done == 4 and total == 9:  # 3 steps per epoch: phase 2, epoch 1
            raise KeyboardInterrupt

    checkpoint = tmp_path / "point.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint, progress=stop_in_second_phase)
    resumed = _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint)
    expected, got = whole.calibration.state_dict(), resumed.calibration.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.losses == whole.losses
    changed = dict(TWO_PHASES, phases=[TWO_PHASES["phases"][0], dict(TWO_PHASES["phases"][1], epochs=3)])
    with pytest.raises(ConfigError, match="another recipe"):
        _train(tinybind, test_benchmark, CalibrationRecipe(**changed), checkpoint=checkpoint)


def test_distill_and_stable_losses_follow_their_formulas() -> None:
    generator = torch.Generator().manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)  # noqa: E731
    batch = CalibrationBatch(unit(4, 8), unit(4, 8), unit(4, 8), unit(3, 8), torch.tensor([0, 1, 2, 0]))
    align = (batch.adversarial - batch.frozen).square().sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(10 * batch.adversarial @ batch.centers.T, batch.labels)
    assert torch.allclose(calibration_loss("distill", batch, reg=0, scale=10), align)
    assert torch.allclose(calibration_loss("stable", batch, reg=0, scale=10), ce + align)


def test_spectral_gate_starts_as_the_identity_and_removes_a_bounded_perturbation_of_silence() -> None:
    generator = torch.Generator().manual_seed(0)
    speech = 0.5 * torch.sin(torch.linspace(0, 2 * math.pi * 440, 16000)).expand(2, -1)
    gate = SpectralGate()
    assert torch.allclose(gate(speech), speech, atol=1e-5)
    eps = 0.01
    noise = (2 * torch.rand(2, 16000, generator=generator) - 1) * eps  # any Linf-eps signal: <= 2 eps per bin
    with torch.no_grad():
        gate.threshold.fill_(2 * eps)
    with torch.no_grad():
        assert float(gate(noise).abs().max()) < 1e-6  # nothing of it passes
        kept = gate(speech + noise)
    middle = slice(1000, 15000)  # away from the reflected edges
    assert float((kept - speech)[:, middle].abs().max()) < 0.1  # the tone passes, shrunk by at most ~2 eps


def test_spectral_option_belongs_to_waveforms() -> None:
    purifier = Purifier("waveform", (16000,), (-1.0, 1.0), spectral=True)
    assert any(isinstance(m, SpectralGate) for m in purifier.modules())
    with pytest.raises(ConfigError, match="spectral gate is for waveforms"):
        Purifier("pixels", (3, 32, 32), (0.0, 1.0), spectral=True)


def test_neighbour_smoothing_starts_as_the_identity_and_averages_independent_shifts() -> None:
    from bindguard.modalities.point import point_spec

    spec = point_spec(256)
    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(1, 256, generator=generator) * 2 * math.pi
    circle = torch.stack([0.8 * angle.cos(), 0.8 * angle.sin(), torch.zeros_like(angle)], -1)  # a smooth shape
    purifier = Purifier("points", (256, 3), (-1.0, 1.0), project=spec.project, neighbours=16)
    with torch.no_grad():
        assert torch.equal(purifier(circle), circle)
        shifted = circle + (2 * torch.rand(circle.shape, generator=generator) - 1) * 0.03
        purifier.denoiser.smoothing.fill_(1.0)
        off_shape = lambda p: ((p[..., :2].norm(dim=-1) - 0.8).square() + p[..., 2].square()).sqrt().mean()  # noqa: E731
        error_before, error_after = off_shape(shifted), off_shape(purifier(shifted))
    assert error_after < 0.6 * error_before  # the distance to the shape, not along it
    with pytest.raises(ConfigError, match="neighbour smoothing is for point clouds"):
        Purifier("waveform", (16000,), (-1.0, 1.0), neighbours=8)


def test_a_gate_at_twice_the_budget_silences_any_perturbation_of_silence(tinybind) -> None:
    from bindguard.calibration import CalibrationConfig
    from bindguard.encoders.calibrated import build_calibration

    eps = 2 / 255
    config = CalibrationConfig(
        modality="audio",
        method="purifier",
        objective="ce",
        threat={"norm": "linf", "eps": eps},
        options={"spectral": True, "gate": 2.0},
    )
    purifier = build_calibration(tinybind, config).purifier
    spec = tinybind.input_spec(Modality.AUDIO)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # random sign patterns at the full Linf budget, the largest a perturbation can be
        perturbation = eps * spec.range * torch.sign(torch.randn(2, *spec.shape, generator=generator))
        with torch.no_grad():
            assert float(purifier(perturbation).abs().max()) < 1e-6
    with pytest.raises(ConfigError, match="needs 'spectral': true"):
        CalibrationConfig(
            modality="audio", method="purifier", objective="ce", threat=config.threat, options={"gate": 2.0}
        )


def _floored(tinybind, floor: float):
    from bindguard.calibration import CalibrationConfig
    from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration

    config = CalibrationConfig(
        modality="audio",
        method="floor",
        objective="ce",
        threat={"norm": "linf", "eps": 2 / 255},
        options={"floor": floor},
    )
    return CalibratedEncoder(tinybind, {Modality.AUDIO: build_calibration(tinybind, config)})


def test_a_floor_at_the_front_ends_own_value_is_the_identity_and_is_learned_end_to_end(tinybind) -> None:
    from bindguard.encoders.logmel import FLOOR

    spec = tinybind.input_spec(Modality.AUDIO)
    generator = torch.Generator().manual_seed(0)
    clip = 0.1 * torch.randn(2, *spec.shape, generator=generator)
    same = _floored(tinybind, FLOOR)
    with torch.no_grad():
        assert torch.allclose(same.encode_modality("audio", clip), tinybind.encode_modality("audio", clip), atol=1e-5)
    raised = _floored(tinybind, 1e-2)
    floor = raised.calibration_of(Modality.AUDIO).floor
    assert floor.log_floor.shape == (tinybind.config.n_mels, 1)
    clip.requires_grad_(True)
    raised.encode_modality("audio", clip).square().sum().backward()
    assert floor.log_floor.grad is not None and floor.log_floor.grad.abs().sum() > 0  # it trains
    assert clip.grad is not None and clip.grad.abs().sum() > 0  # and attacks differentiate through it


def test_a_floor_above_a_perturbations_band_power_hides_it_from_the_embedding(tinybind) -> None:
    eps = 1 / 255  # white noise at the full budget: its loudest mel band holds about 0.14 (power units)
    spec = tinybind.input_spec(Modality.AUDIO)
    generator = torch.Generator().manual_seed(0)
    silence = torch.zeros(4, *spec.shape)
    perturbation = eps * spec.range * torch.sign(torch.randn(4, *spec.shape, generator=generator))
    moved = {}
    for floor in (1e-6, 1e-2, 10.0):
        encoder = _floored(tinybind, floor)
        with torch.no_grad():
            before = encoder.encode_modality("audio", silence)
            after = encoder.encode_modality("audio", silence + perturbation)
        moved[floor] = float((1 - (before * after).sum(-1)).mean())  # cosine distance (embeddings are unit)
    assert moved[10.0] < 0.1 * moved[1e-6]  # log(1 + 0.14 / 10) is about 0.014 per band: little is left
    assert moved[1e-2] > 0.3 * moved[1e-6]  # a floor below the noise's bands hides little


def test_the_floor_part_belongs_to_front_ends_with_a_log_floor(tinybind) -> None:
    from bindguard.calibration import CalibrationConfig
    from bindguard.encoders.calibrated import build_calibration

    config = CalibrationConfig(modality="image", method="floor", objective="ce", threat={"norm": "linf", "eps": 0.01})
    with pytest.raises(ConfigError, match="drop 'floor'"):
        build_calibration(tinybind, config)
    with pytest.raises(ConfigError, match="floor"):
        CalibrationConfig(
            modality="audio", method="floor", objective="ce", threat=config.threat, options={"floor": 0.0}
        )


def test_a_phase_that_trains_the_floor_moves_it_alone_and_it_survives_a_save_and_load(
    tinybind, test_benchmark, tmp_path: Path
) -> None:
    from bindguard.encoders.calibrated import CalibratedEncoder

    recipe = CalibrationRecipe(
        method="floor+lora",
        batch_size=16,
        eps="2/255",
        options={"floor": 0.5},
        phases=[{"name": "floor", "objective": "ce", "epochs": 1, "attack_steps": 1, "train": ["floor"]}],
    )
    calibration = _train(tinybind, test_benchmark, recipe, modality=Modality.AUDIO).calibration
    learned = calibration.floor.log_floor.detach()
    assert not torch.allclose(learned, torch.full_like(learned, math.log(0.5)))  # it trained
    assert all(float(up.abs().sum()) == 0 for up in calibration.override.up.values())  # LoRA untouched
    calibrated = CalibratedEncoder(tinybind, {Modality.AUDIO: calibration})
    calibrated.save_pretrained(tmp_path / "cal")
    loaded = CalibratedEncoder.from_pretrained(tinybind, tmp_path / "cal")
    assert torch.equal(loaded.calibration_of(Modality.AUDIO).floor.log_floor, learned)
    clip = test_benchmark.data[Modality.AUDIO].inputs[:2]
    with torch.no_grad():
        assert torch.equal(loaded.encode_modality("audio", clip), calibrated.encode_modality("audio", clip))
