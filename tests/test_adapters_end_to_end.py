"""Every job on every real-encoder adapter, through the public Python API.

Tiny ImageBind and LanguageBind (image and audio), tiny CLIP (image) and tiny CLAP (audio), each with random weights,
go through ``evaluate``, ``attack_samples``, ``calibrate`` with every method part that fits, the
reload of a saved calibration, ``evaluate_calibration``, ``certify_samples`` on a noisy purifier,
the HTML report, and the refusal of a calibration by an instance with other weights. The data is a
user ``.safetensors`` file made here: six samples of three classes per modality. Accuracy is near
chance; the checks are about mechanics and invariants (files written, budget, robust <= clean).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import bindguard
from bindguard._types import Modality
from bindguard.calibration import PARTS, CalibrationConfig
from bindguard.encoders import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration, calibrate_encoder
from bindguard.errors import ConfigError, DataError
from bindguard.reports import build_report

CLASSES = ["low", "middle", "high"]
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])
EPS = "4/255"
TOLERANCE = 1e-5
LANGUAGEBIND_AUDIO_SECONDS = 0.5
IMAGEBIND_AUDIO = 32_000  # one 2 s clip at 16 kHz: the smallest ImageBind audio input
CLAP_SECONDS = 0.5
PURIFIER_WIDTH = 4  # channels of the purifier's convolutions (default 16): a quarter of the cost at 224 px
CALIBRATE = {"epochs": 1, "attack_steps": 1, "limit": 6, "batch_size": 6}
MEASURE = {"n": 6, "steps": 2, "square_queries": 4, "check_samples": 3, "batch_size": 6}


@dataclass
class Adapter:
    """One adapter under test: the encoder, a user data file, and a maker of another instance."""

    name: str
    encoder: Encoder
    data: Path
    modalities: tuple[Modality, ...]
    other: Callable[[], Encoder]  # the same adapter with other weights
    root: Path
    _calibrations: dict[tuple[str, float], tuple[CalibratedEncoder, Path]] = field(default_factory=dict)

    def purified(self) -> tuple[Modality, ...]:
        return tuple(m for m in self.modalities if self.encoder.input_spec(m).purifier is not None)

    def calibration(self, method: str, noise: float = 0.0) -> tuple[CalibratedEncoder, Path]:
        """``calibrate`` once per method (and noise) for this adapter, on every modality it fits."""
        key = (method, noise)
        if key not in self._calibrations:
            modalities = self.purified() if "purifier" in method else self.modalities
            folder = self.root / f"{method}-{noise}"
            calibrated = bindguard.calibrate(
                self.encoder,
                self.data,
                modalities=[m.value for m in modalities],
                method=method,
                options={"width": PURIFIER_WIDTH, "noise": noise} if "purifier" in method else {},
                out=folder,
                **CALIBRATE,
            )
            self._calibrations[key] = calibrated, folder
        return self._calibrations[key]


def _tones(samples: int, rate: int, generator: torch.Generator) -> torch.Tensor:
    """(6, samples) in [-1, 1]: a low, middle or high tone per class, in a little noise."""
    time = torch.arange(samples) / rate
    pitches = torch.tensor([200.0, 800.0, 3200.0])[LABELS]
    tones = 0.5 * torch.sin(2 * math.pi * pitches[:, None] * time)
    return (tones + 0.05 * torch.randn(6, samples, generator=generator)).clamp(-1, 1)


def _images(size: int, generator: torch.Generator) -> torch.Tensor:
    """(6, 3, size, size) in [0, 1], each tinted by its class's channel."""
    images = 0.4 * torch.rand(6, 3, size, size, generator=generator)
    images[torch.arange(6), LABELS] += 0.6
    return images


def _write_data(path: Path, inputs: dict[str, torch.Tensor]) -> Path:
    tensors = {}
    for name, x in inputs.items():
        tensors[name] = x.contiguous()
        tensors[f"{name}.labels"] = LABELS.clone()  # safetensors refuses tensors that share memory
    save_file(tensors, str(path), metadata={"class_names": json.dumps(CLASSES)})
    return path


def _imagebind(root: Path) -> Adapter:
    from bindguard.encoders.imagebind import create_imagebind

    def build(seed: int) -> Encoder:
        return create_imagebind(config="tiny", audio_samples=IMAGEBIND_AUDIO, video_frames=2, seed=seed)

    generator = torch.Generator().manual_seed(0)
    data = _write_data(
        root / "imagebind.safetensors",
        {"image": _images(224, generator), "audio": _tones(IMAGEBIND_AUDIO, 16_000, generator)},
    )
    return Adapter("imagebind", build(0), data, (Modality.IMAGE, Modality.AUDIO), lambda: build(1), root)


def _clip(root: Path) -> Adapter:
    pytest.importorskip("transformers")
    from bindguard.encoders.clip import create_clip
    from test_clip import IMAGE_SIZE, write_clip_folder

    first, second = write_clip_folder(root / "clip-a", seed=0), write_clip_folder(root / "clip-b", seed=1)
    generator = torch.Generator().manual_seed(0)
    data = _write_data(root / "clip.safetensors", {"image": _images(IMAGE_SIZE, generator)})
    return Adapter(
        "clip", create_clip(checkpoint=first), data, (Modality.IMAGE,), lambda: create_clip(checkpoint=second), root
    )


def _clap(root: Path) -> Adapter:
    pytest.importorskip("transformers")
    from bindguard.encoders.clap import create_clap
    from test_clap import RATE, write_clap_folder

    first, second = write_clap_folder(root / "clap-a", seed=0), write_clap_folder(root / "clap-b", seed=1)
    generator = torch.Generator().manual_seed(0)
    data = _write_data(root / "clap.safetensors", {"audio": _tones(int(RATE * CLAP_SECONDS), RATE, generator)})
    encoder = create_clap(checkpoint=first, seconds=CLAP_SECONDS)
    return Adapter(
        "clap", encoder, data, (Modality.AUDIO,), lambda: create_clap(checkpoint=second, seconds=CLAP_SECONDS), root
    )


def _languagebind(root: Path) -> Adapter:
    pytest.importorskip("transformers")
    from bindguard.encoders.languagebind import create_languagebind
    from test_languagebind import SEEDS, base_state, write_folder

    def folder(name: str, seed: int) -> Path:
        write_folder(root / name / "LanguageBind_Image", "image", base_state("image", SEEDS["image"] + seed))
        write_folder(root / name / "LanguageBind_Audio_FT", "audio", base_state("audio", SEEDS["audio"] + seed))
        return root / name

    first, second = folder("languagebind-a", 0), folder("languagebind-b", 10)
    encoder = create_languagebind(checkpoint=first, audio_seconds=LANGUAGEBIND_AUDIO_SECONDS)
    generator = torch.Generator().manual_seed(0)
    size = encoder.input_spec(Modality.IMAGE).shape[-1]
    samples = encoder.input_spec(Modality.AUDIO).shape[-1]
    data = _write_data(
        root / "languagebind.safetensors",
        {"image": _images(size, generator), "audio": _tones(samples, 16_000, generator)},
    )
    return Adapter(
        "languagebind",
        encoder,
        data,
        (Modality.IMAGE, Modality.AUDIO),
        lambda: create_languagebind(checkpoint=second, audio_seconds=LANGUAGEBIND_AUDIO_SECONDS),
        root,
    )


BUILDERS = {"imagebind": _imagebind, "languagebind": _languagebind, "clip": _clip, "clap": _clap}


@pytest.fixture(scope="module", params=list(BUILDERS))
def adapter(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Adapter:
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def evaluated(adapter: Adapter) -> tuple[bindguard.Results, Path]:
    out = adapter.root / "evaluate"
    results = bindguard.evaluate(
        adapter.encoder,
        adapter.data,
        attacks="standard",
        eps=[EPS],
        n=6,
        steps=2,
        square_queries=4,
        check_samples=3,
        batch_size=6,
        out=out,
    )
    return results, out


def _budget(encoder: Encoder, modality: Modality) -> float:
    return float(Fraction(EPS)) * encoder.input_spec(modality).range


# --- evaluate and report ----------------------------------------------------------------------------


def test_evaluate_gives_clean_and_robust_rows_and_writes_results(adapter: Adapter, evaluated) -> None:
    results, out = evaluated
    assert {row.modality for row in results.clean} == {m.value for m in adapter.modalities}
    for modality in adapter.modalities:
        (clean,) = [row for row in results.clean if row.modality == modality.value]
        (robust,) = [row for row in results.robust if row.modality == modality.value]
        assert clean.n == robust.n == 6
        assert robust.top1 <= robust.clean_top1 == clean.top1
        assert robust.attacks == ["apgd-ce", "apgd-t", "rank", "embed", "square"]
        assert robust.eps_abs == pytest.approx(_budget(adapter.encoder, modality))
        assert robust.max_norm <= robust.eps_abs * (1 + TOLERANCE)
    assert results.settings["model_identity"] == adapter.encoder.identity
    assert (out / "results.json").is_file()
    assert bindguard.Results.read(out).to_dict() == results.to_dict()


def test_report_of_the_evaluation_names_every_modality(adapter: Adapter, evaluated) -> None:
    _, out = evaluated
    page = build_report(out)
    assert page == out / "report.html" and page.is_file()
    html = page.read_text()
    assert all(modality.value in html for modality in adapter.modalities)


# --- attack_samples ---------------------------------------------------------------------------------


def test_attack_samples_writes_examples_within_the_budget(adapter: Adapter) -> None:
    for modality in adapter.modalities:
        out = adapter.root / f"attack-{modality.value}"
        attacked = bindguard.attack_samples(
            adapter.encoder, adapter.data, modality=modality.value, attack="apgd-ce", eps=EPS, steps=2, n=6, out=out
        )
        assert attacked.path == out / f"adversarial-{modality.value}.safetensors" and attacked.path.is_file()
        written = load_file(str(attacked.path))
        clean, adversarial = written["clean"], written["adversarial"]
        spec = adapter.encoder.input_spec(modality)
        assert clean.shape == adversarial.shape == (6, *spec.shape)
        budget = _budget(adapter.encoder, modality)
        assert float((adversarial - clean).abs().max()) <= budget * (1 + TOLERANCE)
        assert float(written["norms"].max()) <= budget * (1 + TOLERANCE)
        low, high = spec.domain
        assert low - TOLERANCE <= float(adversarial.min()) and float(adversarial.max()) <= high + TOLERANCE
        assert torch.equal(written["labels"], LABELS)
        assert attacked.summary["max_norm"] <= budget * (1 + TOLERANCE)


# --- calibrate, reload, evaluate_calibration --------------------------------------------------------


@pytest.mark.parametrize("method", PARTS)
def test_every_calibration_part_trains_reloads_and_is_measured(adapter: Adapter, method: str) -> None:
    if method == "floor":  # a part for log-power front ends that declare their floor (TinyBind audio)
        assert not any(adapter.encoder.log_floor(m) for m in adapter.modalities)
        with pytest.raises(ConfigError, match="drop 'floor'"):
            build_calibration(
                adapter.encoder,
                CalibrationConfig(
                    modality=adapter.modalities[0].value,
                    method="floor",
                    objective="ce",
                    threat={"norm": "linf", "eps": 4 / 255},
                ),
            )
        return
    modalities = adapter.purified() if method == "purifier" else adapter.modalities
    if not modalities:
        pytest.skip(f"no {adapter.name} modality declares a purifier")
    calibrated, folder = adapter.calibration(method)
    assert set(calibrated.calibrations) == {m.value for m in modalities}
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    for modality in modalities:
        assert 0 < calibrated.calibration_of(modality).trainable_parameters() < adapter.encoder.num_parameters()
    assert not any(parameter.requires_grad for parameter in adapter.encoder.parameters())

    reloaded = calibrate_encoder(adapter.encoder, folder)
    inputs = load_file(str(adapter.data))
    with torch.no_grad():
        for modality in modalities:
            x = inputs[modality.value][:2]
            torch.testing.assert_close(
                reloaded.encode_modality(modality, x), calibrated.encode_modality(modality, x), rtol=0, atol=1e-6
            )

    results = bindguard.evaluate_calibration(reloaded, adapter.data, out=folder, **MEASURE)
    assert (folder / "results.json").is_file()
    assert {row.modality for row in results.calibration} == {m.value for m in modalities}
    for row in results.calibration:
        assert row.method == method and row.n == 6
        assert row.before["robust_top1"] <= row.before["clean_top1"]
        assert row.after["robust_top1"] <= row.after["clean_top1"]
    for robust in results.robust:
        assert robust.top1 <= robust.clean_top1
        assert robust.max_norm <= robust.eps_abs * (1 + TOLERANCE)
    assert results.settings["model_identity"].startswith(adapter.encoder.identity + "+calibration@")


# --- certify_samples --------------------------------------------------------------------------------


def test_certify_samples_on_a_noisy_purifier(adapter: Adapter) -> None:
    if not adapter.purified():
        pytest.skip(f"no {adapter.name} modality declares a purifier")
    _, folder = adapter.calibration("purifier", noise=0.1)
    for modality in adapter.purified():
        summary = bindguard.certify_samples(
            adapter.encoder, folder, adapter.data, modality=modality.value, n=4, draws=16
        )
        assert summary["modality"] == modality.value and summary["n"] == 4 and summary["draws"] == 16
        assert summary["sigma"] == pytest.approx(0.1 * adapter.encoder.input_spec(modality).range)
        assert len(summary["radius"]) == 4 and all(r >= 0 and math.isfinite(r) for r in summary["radius"])
        accuracies = [point["certified_top1"] for point in summary["curve"]]
        assert accuracies == sorted(accuracies, reverse=True) and all(0 <= a <= 1 for a in accuracies)


# --- a calibration belongs to its weights -----------------------------------------------------------


def test_a_calibration_is_refused_by_an_instance_with_other_weights(adapter: Adapter) -> None:
    _, folder = adapter.calibration("head")
    other = adapter.other()
    assert other.name == adapter.encoder.name and other.identity != adapter.encoder.identity
    with pytest.raises(DataError, match="other weights") as caught:
        calibrate_encoder(other, folder)
    assert "\n" not in str(caught.value)
