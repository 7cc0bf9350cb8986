"""Calibration: identity at init, the parameter budget, frozen backbone, deterministic resume,
safe loading, and evaluation through the calibration."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from torch import nn

from bindguard._types import Modality
from bindguard.calibration import PARTS, CalibrationConfig, parse_method, read_calibrations, write_calibrations
from bindguard.calibration.module import FORMAT
from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration, tower_parameters
from bindguard.encoders.logmel import FLOOR
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.training.calibrate import CalibrationRecipe, calibrate_modality

LIGHT_PARTS = ("head", "residual-head", "lora", "purifier")


def config(modality: str, method: str, **options) -> CalibrationConfig:
    return CalibrationConfig(
        modality=modality, method=method, objective="ce", threat={"norm": "linf", "eps": 4 / 255}, options=options
    )


def batch(benchmark, modality: Modality, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    data = benchmark.data[modality]
    return data.inputs[:count], data.labels[:count]


@pytest.mark.parametrize("method", [*PARTS, "purifier+lora+head"])
@pytest.mark.parametrize("modality", ["image", "video", "audio", "point", "depth", "thermal"])
def test_calibration_starts_as_the_original(tinybind, test_benchmark, modality: str, method: str) -> None:
    x, _ = batch(test_benchmark, Modality(modality))
    options = {}
    if method == "floor":  # audio alone has a floor; it starts where its option says, here at the front end's own
        if modality != "audio":
            with pytest.raises(ConfigError, match="drop 'floor'"):
                build_calibration(tinybind, config(modality, method))
            return
        options = {"floor": FLOOR}
    calibrated = CalibratedEncoder(
        tinybind, {Modality(modality): build_calibration(tinybind, config(modality, method, **options))}
    )
    with torch.no_grad():
        before = tinybind.encode_modality(modality, x)
        after = calibrated.encode_modality(modality, x)
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("method", LIGHT_PARTS)
def test_light_methods_train_under_one_percent(tinybind, method: str) -> None:
    total = tinybind.num_parameters()
    assert total > 25_000_000  # the text tower counts: it is part of the encoder
    for modality in ("image", "video", "audio", "point", "depth", "thermal"):
        calibration = build_calibration(tinybind, config(modality, method))
        assert 0 < calibration.trainable_parameters() < 0.01 * total, (modality, method)


def test_tower_parameters_follow_the_modality(tinybind) -> None:
    image = tower_parameters(tinybind, Modality.IMAGE)
    point = tower_parameters(tinybind, Modality.POINT)
    assert any(name.startswith("trunk.") for name in image) and any(name.startswith("heads.image.") for name in image)
    assert not any(name.startswith("heads.audio.") for name in image)
    assert all(name.startswith("point_net.") for name in point)


def test_method_parsing() -> None:
    assert parse_method("head+purifier") == ("purifier", "head")
    with pytest.raises(UnknownNameError, match="did you mean 'purifier'"):
        parse_method("purifer")
    with pytest.raises(ConfigError):
        parse_method("lora+finetune")
    with pytest.raises(UnknownNameError):
        CalibrationRecipe(objective="nope").check()
    with pytest.raises(ConfigError):
        CalibrationRecipe(mode="sometimes").check()


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train(tinybind, test_benchmark, recipe: CalibrationRecipe, **kwargs):
    data = test_benchmark.data[Modality.POINT]
    from bindguard.encoders.centers import semantic_centers

    centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[Modality.POINT])
    return calibrate_modality(tinybind, Modality.POINT, data.inputs[:48], data.labels[:48], centers, recipe, **kwargs)


QUICK = dict(method="lora+head", epochs=2, batch_size=16, attack_steps=1, eps="8/255")


@pytest.mark.parametrize("objective", ["ce", "l2", "infonce", "clean"])
def test_training_leaves_the_backbone_alone_and_moves_the_calibration(tinybind, test_benchmark, objective: str) -> None:
    before = _snapshot(tinybind)
    outcome = _train(tinybind, test_benchmark, CalibrationRecipe(objective=objective, **QUICK))
    after = _snapshot(tinybind)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in tinybind.parameters())
    assert len(outcome.losses) == 2 and all(torch.isfinite(torch.tensor(outcome.losses)))
    calibration = outcome.calibration
    assert torch.norm(calibration.head.linear.weight - torch.eye(tinybind.embed_dim)) > 0  # the head starts as I
    assert any(float(up.abs().sum()) > 0 for up in calibration.override.up.values())  # the adapters start at 0
    assert calibration.config.trainable_parameters == calibration.trainable_parameters()


@pytest.mark.parametrize("mode", ["static", "adaptive"])
def test_interrupted_training_resumes_to_the_same_result(tinybind, test_benchmark, tmp_path: Path, mode: str) -> None:
    recipe = CalibrationRecipe(mode=mode, **QUICK)
    whole = _train(tinybind, test_benchmark, recipe).calibration.state_dict()

    def stop_in_second_epoch(stage: str, done: int, total: int) -> None:
        if stage.endswith("calibrate") and done == 4 and total == 6:  # 3 steps per epoch
            raise KeyboardInterrupt

    checkpoint = tmp_path / "point.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint, progress=stop_in_second_epoch)
    assert checkpoint.is_file()
    resumed = _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint).calibration.state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    with pytest.raises(ConfigError, match="another recipe"):
        _train(tinybind, test_benchmark, CalibrationRecipe(mode=mode, **(QUICK | {"epochs": 3})), checkpoint=checkpoint)


def test_training_time_adds_up_over_an_interruption(tinybind, test_benchmark, tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from bindguard.training import calibrate as training

    clock = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def ticking(stop_at: int | None = None):
        def progress(stage: str, done: int, total: int) -> None:
            clock[0] += 1.0  # one second per training step, and one for the closing report
            if done == stop_at:
                raise KeyboardInterrupt

        return progress

    recipe = CalibrationRecipe(mode="adaptive", **QUICK)
    whole = _train(tinybind, test_benchmark, recipe, progress=ticking())
    checkpoint = tmp_path / "point.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint, progress=ticking(stop_at=4))
    clock[0] = 1000.0  # another process, another clock: the checkpoint carries the first epoch's 3 s
    resumed = _train(tinybind, test_benchmark, recipe, checkpoint=checkpoint, progress=ticking())
    assert whole.seconds == resumed.seconds == 7.0  # 6 steps + the closing report, as one run
    assert resumed.calibration.config.recipe["train_seconds"] == 7.0


@pytest.fixture(scope="module")
def saved(tinybind, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("calibration")
    calibrations = {}
    for modality, method in (("image", "purifier+lora"), ("point", "residual-head")):
        calibration = build_calibration(tinybind, config(modality, method))
        with torch.no_grad():  # move away from the identity, so a load that silently fails shows
            for parameter in calibration.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        calibrations[Modality(modality)] = calibration
    CalibratedEncoder(tinybind, calibrations).save_pretrained(directory)
    return directory


def test_save_and_load_round_trip(tinybind, test_benchmark, saved: Path) -> None:
    from bindguard.encoders import create_encoder

    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    config_json = json.loads((saved / "config.json").read_text())
    assert config_json["encoder"] == tinybind.identity_for([Modality.IMAGE, Modality.POINT])
    assert set(config_json["modalities"]) == {"image", "point"}
    loaded = create_encoder("tinybind", calibration=saved)
    again = CalibratedEncoder.from_pretrained(tinybind, saved)
    for modality in (Modality.IMAGE, Modality.POINT):
        x, _ = batch(test_benchmark, modality)
        with torch.no_grad():
            assert torch.equal(loaded.encode_modality(modality, x), again.encode_modality(modality, x))
            assert not torch.allclose(loaded.encode_modality(modality, x), tinybind.encode_modality(modality, x))
    x, _ = batch(test_benchmark, Modality.AUDIO)  # uncalibrated modalities pass through
    with torch.no_grad():
        assert torch.equal(loaded.encode_modality("audio", x), tinybind.encode_modality("audio", x))


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for path in saved.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _edit_config(d, encoder="imagebind"), "made for encoder 'imagebind'"),
        (lambda d: _edit_config(d, embed_dim=1024), "1024-d"),
        (lambda d: _edit_config(d, format="something-else"), "not a bindguard calibration"),
        (lambda d: (d / "config.json").write_text("{not json"), "corrupt"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-9] + b"tampered!"),
            "checksum",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 16), "checksum"),
    ],
)
def test_damaged_or_foreign_calibrations_are_refused(tinybind, saved, tmp_path, damage, message) -> None:
    directory = _copy(saved, tmp_path)
    damage(directory)
    with pytest.raises(DataError, match=message):
        CalibratedEncoder.from_pretrained(tinybind, directory)


def test_a_calibration_for_another_modality_set_is_refused(tinybind, saved, tmp_path) -> None:
    directory = _copy(saved, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["modalities"]["image"]["options"] = {"rank": 8}  # tensors no longer fit what the config builds
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="does not fit"):
        CalibratedEncoder.from_pretrained(tinybind, directory)


def test_pickled_checkpoints_are_refused_never_loaded(tinybind, tmp_path) -> None:
    directory = tmp_path / "pickled"
    directory.mkdir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"head": Payload()}, directory / "model.pt")
    with pytest.raises(DataError, match="pickled checkpoint"):
        CalibratedEncoder.from_pretrained(tinybind, directory)
    assert not marker.exists()


def test_writing_into_a_foreign_folder_overwrites_nothing(tinybind, saved, tmp_path) -> None:
    from bindguard.calibration import write_calibrations

    directory = _copy(saved, tmp_path)
    _edit_config(directory, encoder="imagebind")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with pytest.raises(DataError):
        write_calibrations(directory, encoder="tinybind", embed_dim=384, encoder_parameters=1, modules={})
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_attacks_go_through_the_calibration(tinybind, test_benchmark, saved) -> None:
    """Adaptive: the input gradient of the calibrated model is not the base model's."""
    calibrated = CalibratedEncoder.from_pretrained(tinybind, saved)
    x, labels = batch(test_benchmark, Modality.IMAGE)

    def gradient(encoder):
        inputs = x.clone().requires_grad_(True)
        encoder.encode_modality("image", inputs).sum().backward()
        return inputs.grad

    assert not torch.allclose(gradient(calibrated), gradient(tinybind))


def test_randomized_purifier_is_attacked_with_eot(tinybind, monkeypatch) -> None:
    """The adaptive evaluation of a randomized purifier attacks the EOT average of several draws, never one draw."""
    from bindguard.attacks import Attack, ThreatModel
    from bindguard.data import load_dataset
    from bindguard.encoders.expectation import ExpectationEncoder
    from bindguard.evaluation.calibration import evaluate_calibration
    from bindguard.evaluation.ensemble import parse_ensemble
    from bindguard.evaluation.robust import RobustSettings

    calibration = build_calibration(tinybind, config("point", "purifier", noise=0.05))
    calibrated = CalibratedEncoder(tinybind, {Modality.POINT: calibration})
    benchmark = load_dataset("builtin", split="test", modalities=[Modality.POINT], limit=4)
    x = benchmark.data[Modality.POINT].inputs
    with torch.no_grad():  # the premise: two draws differ, so one draw per step would mistake noise for robustness
        assert calibrated.randomized and not torch.equal(
            calibrated.encode_modality("point", x), calibrated.encode_modality("point", x)
        )
    attacked: list[object] = []
    run = Attack.run
    monkeypatch.setattr(
        Attack, "run", lambda self, encoder, *a, **k: attacked.append(encoder) or run(self, encoder, *a, **k)
    )
    settings = RobustSettings(ensemble=parse_ensemble("pgd"), steps=1, square_queries=0, checks=False)
    rows, _ = evaluate_calibration(tinybind, calibrated, benchmark, ThreatModel.linf("2/255"), settings=settings)
    adaptive = [encoder for encoder in attacked if encoder is not tinybind]  # the rest: transfer examples on the base
    assert adaptive and all(isinstance(encoder, ExpectationEncoder) for encoder in adaptive)
    assert all(encoder.inner is calibrated and encoder.samples > 1 for encoder in adaptive)
    assert rows[0]["eot_samples"] == adaptive[0].samples


def test_certified_radius_of_a_smoothed_calibration(tinybind, test_benchmark) -> None:
    from bindguard.encoders.centers import semantic_centers
    from bindguard.evaluation.certify import ABSTAIN, certify

    calibration = build_calibration(tinybind, config("point", "purifier", noise=0.01))
    calibrated = CalibratedEncoder(tinybind, {Modality.POINT: calibration})
    x, labels = batch(test_benchmark, Modality.POINT, 6)
    centers = semantic_centers(tinybind, test_benchmark.class_names, test_benchmark.templates[Modality.POINT])
    certificate = certify(calibrated, Modality.POINT, x, centers, n0=8, n=64, batch_size=32)
    assert certificate.sigma == pytest.approx(0.02)
    certified = certificate.prediction != ABSTAIN
    assert certified.any()
    # with 64 unanimous votes at alpha 0.001 the bound is 0.001 ** (1 / 64): radius sigma * Phi^-1 of it
    from scipy.stats import norm

    assert float(certificate.radius.max()) <= 0.02 * norm.ppf(0.001 ** (1 / 64)) + 1e-6
    assert (certificate.radius[~certified] == 0).all() and (certificate.radius[certified] > 0).all()
    with pytest.raises(ConfigError, match="randomized purifier"):
        certify(CalibratedEncoder(tinybind, {}), Modality.POINT, x, centers)


def test_merged_adapter_weights_follow_parameter_updates(tinybind, test_benchmark) -> None:
    calibration = build_calibration(tinybind, config("image", "lora"))
    calibration.requires_grad_(False)
    calibrated = CalibratedEncoder(tinybind, {Modality.IMAGE: calibration})
    x, _ = batch(test_benchmark, Modality.IMAGE)
    with torch.no_grad():
        first = calibrated.encode_modality("image", x)
        for parameter in calibration.override.up.values():
            parameter.add_(0.05)  # in place, as an optimizer step is
        second = calibrated.encode_modality("image", x)
        calibration.override.load_state_dict({k: torch.zeros_like(v) if "up" in k else v
                                              for k, v in calibration.override.state_dict().items()})  # fmt: skip
        third = calibrated.encode_modality("image", x)
    assert not torch.allclose(first, second)
    assert torch.allclose(first, third, atol=1e-6)


# ---------------------------------------------------------------- interrupted writes


class _Part(nn.Module):
    """The least a calibration folder stores: a config and some tensors."""

    def __init__(self, modality: str, value: float):
        super().__init__()
        self.config = config(modality, "residual-head")
        self.weight = nn.Parameter(torch.full((3, 2), value))


def _write(directory: Path, **modules: _Part) -> None:
    write_calibrations(directory, encoder="toy@0", embed_dim=2, encoder_parameters=100, modules=modules)


def _loaded(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    _, configs, tensors = read_calibrations(directory)
    return {m: c.to_json() for m, c in configs.items()}, tensors


def _same(first: tuple[dict, dict[str, torch.Tensor]], second: tuple[dict, dict[str, torch.Tensor]]) -> bool:
    return (
        first[0] == second[0]
        and first[1].keys() == second[1].keys()
        and all(torch.equal(first[1][k], second[1][k]) for k in first[1])
    )


# os.replace runs three times per write: the staged tensor file, config.json (the commit), the final rename.
@pytest.mark.parametrize(("failing_call", "survivor"), [(1, "previous"), (2, "previous"), (3, "new")])
def test_an_interrupted_write_leaves_one_whole_calibration(tmp_path: Path, monkeypatch, failing_call, survivor) -> None:
    directory = tmp_path / "calibration"
    _write(directory, image=_Part("image", 1.0), point=_Part("point", 2.0))
    others = {"results.json": b"{}", "state/image.json": b"[1]", "checkpoints/point.safetensors": b"resume"}
    for name, content in others.items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(content)
    previous = _loaded(directory)

    calls = []
    replace = os.replace

    def interrupted(source, target) -> None:
        calls.append(target)
        if len(calls) == failing_call:
            raise KeyboardInterrupt  # what a kill does between two steps of the write
        replace(source, target)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(directory, point=_Part("point", 3.0))
    monkeypatch.setattr(os, "replace", replace)
    assert len(calls) == failing_call
    after = _loaded(directory)
    if survivor == "previous":
        assert _same(after, previous)
    else:
        assert torch.equal(after[1]["point.weight"], torch.full((3, 2), 3.0))
        assert torch.equal(after[1]["image.weight"], previous[1]["image.weight"])

    _write(directory, point=_Part("point", 4.0))  # a complete write over whatever the interruption left
    configs, tensors = _loaded(directory)
    assert torch.equal(tensors["point.weight"], torch.full((3, 2), 4.0)) and set(configs) == {"image", "point"}
    assert torch.equal(tensors["image.weight"], previous[1]["image.weight"])
    assert sorted(p.name for p in directory.iterdir()) == [
        "checkpoints", "config.json", "model.safetensors", "results.json", "state",
    ]  # fmt: skip
    assert {name: (directory / name).read_bytes() for name in others} == others


def test_a_folder_written_before_staging_still_loads(tmp_path: Path) -> None:
    """Folders of earlier versions hold config.json + model.safetensors only; they load and extend as before."""
    directory = tmp_path / "old"
    directory.mkdir()
    blob = save({"point.weight": torch.full((3, 2), 5.0)}, metadata={"format": FORMAT})
    (directory / "model.safetensors").write_bytes(blob)
    header = {"format": FORMAT, "encoder": "toy@0", "embed_dim": 2, "encoder_parameters": 100}
    old = header | {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "modalities": {"point": config("point", "residual-head").to_json()},
    }
    (directory / "config.json").write_text(json.dumps(old))
    assert torch.equal(_loaded(directory)[1]["point.weight"], torch.full((3, 2), 5.0))
    _write(directory, image=_Part("image", 6.0))
    assert sorted(_loaded(directory)[1]) == ["image.weight", "point.weight"]


def test_transfer_attacks_go_on_only_where_the_uncalibrated_encoder_still_withstands(tinybind, monkeypatch) -> None:
    """Each attack of the transfer stage runs on the samples whose top-1 or top-5 the base still gets right."""
    from bindguard.attacks import ThreatModel
    from bindguard.data import load_dataset
    from bindguard.encoders.centers import benchmark_centers
    from bindguard.evaluation import calibration as evaluation
    from bindguard.evaluation.ensemble import parse_ensemble
    from bindguard.evaluation.robust import RobustSettings, top_hits
    from bindguard.objectives.base import center_scores

    benchmark = load_dataset("builtin", split="test", modalities=[Modality.IMAGE], limit=24)
    data = benchmark.data[Modality.IMAGE]
    centers = benchmark_centers(tinybind, benchmark, Modality.IMAGE)
    calibrated = CalibratedEncoder(tinybind, {Modality.IMAGE: build_calibration(tinybind, config("image", "head"))})
    calls: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = []
    real = evaluation._attack_in_batches

    def recording(attack, encoder, modality, x, index, *arguments, **options):
        outcome = real(attack, encoder, modality, x, index, *arguments, **options)
        calls.append((index.clone(), outcome[0][0]))  # the samples attacked, and the base's hits on them
        return outcome

    monkeypatch.setattr(evaluation, "_attack_in_batches", recording)
    settings = RobustSettings(ensemble=parse_ensemble("pgd,apgd-ce"), steps=2, square_queries=0, checks=False)
    evaluation.transfer_worst_cases(
        tinybind, calibrated, Modality.IMAGE, data.inputs, data.labels, centers, ThreatModel.linf("12/255"), settings
    )
    with torch.no_grad():
        clean = top_hits(center_scores(tinybind.encode_modality(Modality.IMAGE, data.inputs), centers), data.labels)
    first, (top1, top5) = calls[0]
    assert torch.equal(first, torch.nonzero(clean[0] | clean[1]).flatten())
    standing = first[(top1 & clean[0][first]) | (top5 & clean[1][first])]
    assert 0 < standing.numel() < first.numel(), "the case should have samples that fall and samples that stand"
    assert len(calls) == 2 and torch.equal(calls[1][0], standing)


@pytest.mark.parametrize(("method", "mode"), [("lora+head", "adaptive"), ("head", "static")])
@pytest.mark.parametrize("reg", [0.0, 1.0])
def test_training_embeds_the_clean_inputs_only_when_the_loss_uses_them(
    tinybind, test_benchmark, monkeypatch, method: str, mode: str, reg: float
) -> None:
    from bindguard.training import calibrate as training

    sizes: list[int] = []
    forward = training._Embedder.forward

    def counted(self, inputs, head_only=False):
        sizes.append(len(inputs))
        return forward(self, inputs, head_only)

    monkeypatch.setattr(training._Embedder, "forward", counted)
    recipe = CalibrationRecipe(**(QUICK | {"method": method, "mode": mode}), objective="l2", reg=reg)
    outcome = _train(tinybind, test_benchmark, recipe)
    assert all(torch.isfinite(torch.tensor(outcome.losses)))
    # 48 samples in batches of 16: FARE's loss (l2, reg 0) needs z(x') alone, the regulariser z(x) too
    assert sizes == [16 * (2 if reg else 1)] * 6
