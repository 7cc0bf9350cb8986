"""CLAP (transformers ``ClapModel``) from a Hugging Face folder, with bindguard's torch log-mel.

The log-mel front end is compared with transformers' numpy ``ClapFeatureExtractor`` on clips of
at most 10 s (where the extractor is deterministic, apart from fusion's random ``is_longer``,
which only the features comparison avoids). The models are tiny random CLAPs saved with
``save_pretrained`` into temporary folders with a byte-level RoBERTa tokenizer written by the
test: 32 mel bins and a 192 px spectrogram image keep a forward+backward near 0.2 s per clip.
Accuracy is near chance; the checks are about mechanics and invariants.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import bindguard
from bindguard._types import Modality
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.clap import CLAPEncoder, create_clap, front_end_for
from bindguard.encoders.clap_features import ClapLogMel, pad_to
from bindguard.errors import ConfigError, DataError, InvalidInputError

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()

RATE, SECONDS = 48_000, 1.0
SAMPLES = int(RATE * SECONDS)
MELS, SPEC, WINDOW, PROJECTION = 32, 192, 6, 16
# laion/clap-htsat-*'s preprocessor_config.json settings (64 mel bins, 50 Hz to 14 kHz)
LAION = {"feature_size": 64, "frequency_min": 50, "frequency_max": 14_000}
CLASSES = ["low hum", "middle tone", "high whistle"]
EPS = "4/255"
TOLERANCE = 1e-5
PARITY_DB = 1e-4


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, the base symbols of byte-level BPE vocabularies."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [table[b] for b in range(256)]


def write_clap_folder(folder: Path, seed: int, *, fused: bool = False) -> Path:
    folder.mkdir(parents=True)
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *byte_alphabet(), "<mask>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    text = {"vocab_size": len(tokens), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 2, "max_position_embeddings": 80}
    audio = {"depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1], "patch_embeds_hidden_size": 16}
    audio |= {
        "hidden_size": 128,
        "window_size": WINDOW,
        "spec_size": SPEC,
        "num_mel_bins": MELS,
        "enable_fusion": fused,
    }
    torch.manual_seed(seed)
    config = transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=PROJECTION)
    transformers.ClapModel(config).save_pretrained(folder)
    extractor = transformers.ClapFeatureExtractor(
        **(LAION | {"feature_size": MELS}), truncation="fusion" if fused else "rand_trunc"
    )
    extractor.save_pretrained(folder)
    return folder


def copy_folder(source: Path, target: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """``source`` with its weights replaced by ``state`` (None: the same weights)."""
    target.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "vocab.json", "merges.txt"):
        (target / name).write_bytes((source / name).read_bytes())
    weights = state if state is not None else load_file(str(source / "model.safetensors"))
    save_file(weights, str(target / "model.safetensors"))
    return target


def sample_clips(samples: int = int(1.5 * RATE), seed: int = 0) -> torch.Tensor:
    """(2, samples): a tone plus noise and plain noise; 1.5 s pads to 10 s as 6 copies and 1 s of zeros."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(samples) / RATE
    tone = 0.3 * torch.sin(2 * math.pi * 440 * time) + 0.1 * torch.randn(samples, generator=generator)
    return torch.stack([tone, 0.5 * torch.randn(samples, generator=generator)]).clamp(-1, 1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clap")
    return write_clap_folder(root / "a", seed=0), write_clap_folder(root / "b", seed=1)


@pytest.fixture(scope="module")
def encoder(folders: tuple[Path, Path]) -> CLAPEncoder:
    return create_clap(checkpoint=folders[0], seconds=SECONDS)


@pytest.fixture(scope="module")
def audio_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user data file: six 1 s clips of three classes (a low, middle or high tone in noise)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    time = torch.arange(SAMPLES) / RATE
    pitches = torch.tensor([200.0, 800.0, 3200.0])[labels] * (1 + 0.05 * torch.rand(6, generator=generator))
    clips = 0.5 * torch.sin(2 * math.pi * pitches[:, None] * time) + 0.05 * torch.randn(6, SAMPLES, generator=generator)
    path = tmp_path_factory.mktemp("data") / "tones.safetensors"
    save_file(
        {"audio": clips.clamp(-1, 1), "audio.labels": labels}, str(path), metadata={"class_names": json.dumps(CLASSES)}
    )
    return path


# --- the log-mel front end ------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_log_mel_matches_the_feature_extractor(fused: bool, dtype: torch.dtype) -> None:
    """Within 1e-4 dB on 1.5 s clips at laion's settings (measured: float32 1.5e-5, float64 3.6e-6 dB).

    Fusion's ``is_longer`` is random in the extractor for a batch of short clips, so only the features are compared.
    """
    extractor = transformers.ClapFeatureExtractor(**LAION, truncation="fusion" if fused else "rand_trunc")
    waveform = sample_clips()
    expected = extractor([w.numpy() for w in waveform.double()], sampling_rate=RATE, return_tensors="pt")
    found = front_end_for(extractor, fused=fused).to(dtype)(waveform.to(dtype))  # (2, C, 1001, 64)
    assert found.shape == expected["input_features"].shape == (2, 4 if fused else 1, 1001, 64)
    difference = (found.double() - expected["input_features"].double()).abs().max()
    assert float(difference) < PARITY_DB, f"log-mel differs from ClapFeatureExtractor by {float(difference):.3g} dB"


def test_short_clips_are_padded_as_the_extractor_pads_them() -> None:
    waveform = torch.tensor([[1.0, 2.0, 3.0]])
    assert pad_to(waveform, 8, "repeatpad").tolist() == [[1, 2, 3, 1, 2, 3, 0, 0]]
    assert pad_to(waveform, 8, "repeat").tolist() == [[1, 2, 3, 1, 2, 3, 1, 2]]
    assert pad_to(waveform, 8, "pad").tolist() == [[1, 2, 3, 0, 0, 0, 0, 0]]
    with pytest.raises(InvalidInputError, match="at most 2 samples"):
        pad_to(waveform, 2)


def test_gradients_of_the_log_mel_reach_every_sample() -> None:
    front_end = ClapLogMel(torch.rand(513, 8))
    waveform = sample_clips(samples=RATE // 4).requires_grad_(True)
    (gradient,) = torch.autograd.grad(front_end(waveform).sum(), waveform)
    assert bool(torch.isfinite(gradient).all()) and bool((gradient != 0).all())


# --- the encoder -----------------------------------------------------------------------------------


def test_missing_checkpoint_says_where_clap_folders_are_published(folders) -> None:
    with pytest.raises(DataError, match="laion/clap-htsat-unfused") as error:
        create_clap()
    assert "downloads nothing" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="seconds must be a number in \\(0, 10\\]"):
        create_clap(checkpoint=folders[0], seconds=12)


def test_encoder_is_frozen_with_a_raw_48_khz_spec_and_two_logit_scales(folders, tmp_path: Path) -> None:
    state = load_file(str(folders[0] / "model.safetensors"))
    state["logit_scale_a"], state["logit_scale_t"] = torch.tensor(math.log(20.0)), torch.tensor(6.0)
    encoder = create_clap(checkpoint=copy_folder(folders[0], tmp_path / "scales", state), seconds=0.5)
    spec = encoder.input_spec(Modality.AUDIO)
    assert (spec.shape, spec.domain, spec.sample_rate) == ((RATE // 2,), (-1.0, 1.0), RATE)
    assert encoder.modalities == (Modality.AUDIO, Modality.TEXT) and encoder.embed_dim == PROJECTION
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert encoder.identity.startswith("clap@") and not encoder.randomized
    assert (
        encoder.logit_scale("audio") == pytest.approx(20.0) and encoder.logit_scale("text") == 100.0
    )  # exp(6) clamped


def test_embeddings_equal_clap_models_forward_on_the_extractors_features(encoder: CLAPEncoder, folders) -> None:
    """From the raw waveform, our embeddings equal ``ClapModel`` run on ``ClapFeatureExtractor``'s features."""
    reference = transformers.ClapModel.from_pretrained(str(folders[0])).eval()
    extractor = transformers.ClapFeatureExtractor.from_pretrained(str(folders[0]))
    waveform, texts = sample_clips(samples=SAMPLES), ["a dog barking", "rain"]
    features = extractor([w.numpy() for w in waveform.double()], sampling_rate=RATE, return_tensors="pt")
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = reference(**tokens, input_features=features["input_features"], is_longer=features["is_longer"])
        audio, text = encoder.encode_modality("audio", waveform), encoder.encode_modality("text", texts)
    assert not bool(features["is_longer"].any())
    torch.testing.assert_close(audio, outputs.audio_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(text, outputs.text_embeds, rtol=0, atol=1e-6)


def test_gradients_reach_the_raw_waveform(encoder: CLAPEncoder) -> None:
    waveform = sample_clips(samples=SAMPLES).requires_grad_(True)
    embedding = encoder.encode_modality("audio", waveform)  # (2, 16)
    (gradient,) = torch.autograd.grad(embedding[:, 0].sum(), waveform)
    assert bool(torch.isfinite(gradient).all()) and float((gradient != 0).float().mean()) > 0.99


def test_a_fused_model_gets_four_identical_channels_and_is_deterministic(tmp_path: Path) -> None:
    encoder = create_clap(checkpoint=write_clap_folder(tmp_path / "fused", seed=0, fused=True), seconds=SECONDS)
    waveform = sample_clips(samples=SAMPLES)
    features = encoder.front_end(waveform)  # (2, 4, 1001, 32)
    assert features.shape == (2, 4, 1001, MELS) and bool((features == features[:, :1]).all())
    first, second = encoder.encode_modality("audio", waveform), encoder.encode_modality("audio", waveform)
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "lacks 'audio_projection.linear1.weight'"),
        ("extra", "holds 'audio_model.extra_gate', which this model does not have"),
    ],
)
def test_loading_is_strict_and_names_the_offending_tensor(change: str, message: str, folders, tmp_path: Path) -> None:
    state = load_file(str(folders[0] / "model.safetensors"))
    if change == "missing":
        del state["audio_projection.linear1.weight"]
    else:
        state["audio_model.extra_gate"] = torch.zeros(3)
    with pytest.raises(DataError, match=message) as error:
        create_clap(checkpoint=copy_folder(folders[0], tmp_path / change, state))
    assert "\n" not in str(error.value)


def test_integer_buffers_may_be_absent_and_the_extractor_defaults_to_laions_settings(folders, tmp_path: Path) -> None:
    """Index tables and counters come from the config; without preprocessor_config.json, laion_clap's settings."""
    state = load_file(str(folders[0] / "model.safetensors"))
    floating = {name: tensor for name, tensor in state.items() if tensor.is_floating_point()}
    assert "audio_model.audio_encoder.layers.0.blocks.0.attention.self.relative_position_index" not in floating
    folder = copy_folder(folders[0], tmp_path / "lean", floating)
    (folder / "preprocessor_config.json").unlink()
    encoder = create_clap(checkpoint=folder, seconds=SECONDS)
    assert encoder.identity == create_clap(checkpoint=folders[0], seconds=SECONDS).identity
    laion = transformers.ClapFeatureExtractor(**(LAION | {"feature_size": MELS}))
    torch.testing.assert_close(encoder.front_end.mel_filters, torch.from_numpy(laion.mel_filters_slaney))


def test_a_feature_extractor_that_does_not_fit_the_audio_tower_is_refused(folders, tmp_path: Path) -> None:
    folder = copy_folder(folders[0], tmp_path / "fusion")
    settings = json.loads((folder / "preprocessor_config.json").read_text()) | {"truncation": "fusion"}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(DataError, match="truncation 'fusion' does not fit an audio tower with enable_fusion=False"):
        create_clap(checkpoint=folder)


# --- evaluate, attack, calibrate on a user audio file ----------------------------------------------


def test_evaluate_gives_clean_and_robust_rows_on_user_audio(encoder: CLAPEncoder, audio_file: Path) -> None:
    results = bindguard.evaluate(
        encoder, audio_file, modalities=["audio"], eps=[EPS], n=2, steps=2, square_queries=2, check_samples=1
    )
    (clean,) = results.clean
    (robust,) = results.robust
    assert clean.modality == "audio" and clean.n == robust.n == 2
    assert robust.top1 <= robust.clean_top1 == clean.top1
    assert robust.attacks == ["apgd-ce", "apgd-t", "rank", "embed", "square"]
    assert robust.eps_abs == pytest.approx(2 * float(Fraction(EPS)))  # the amplitude range [-1, 1] is 2 wide
    assert robust.max_norm <= robust.eps_abs * (1 + TOLERANCE)
    assert results.settings["model_identity"] == encoder.identity


def test_attack_samples_stay_in_the_budget_and_the_amplitude_domain(encoder: CLAPEncoder, audio_file: Path) -> None:
    attacked = bindguard.attack_samples(encoder, audio_file, modality="audio", attack="apgd-ce", steps=2, n=2)
    clean, adversarial = attacked.tensors["clean"], attacked.tensors["adversarial"]
    assert adversarial.shape == clean.shape == (2, SAMPLES)
    assert float((adversarial - clean).abs().max()) <= 2 * float(Fraction(EPS)) * (1 + TOLERANCE)
    assert float(adversarial.abs().max()) <= 1.0


@pytest.mark.parametrize("method", ["head", "lora"])
def test_calibration_reloads_on_its_checkpoint_and_is_refused_by_another(
    method: str, encoder: CLAPEncoder, folders, audio_file: Path, tmp_path: Path
) -> None:
    calibrated = bindguard.calibrate(
        encoder, audio_file, modalities="audio", method=method, limit=2, epochs=1, attack_steps=1, batch_size=2,
        out=tmp_path,
    )  # fmt: skip
    assert 0 < calibrated.calibration_of(Modality.AUDIO).trainable_parameters() < encoder.num_parameters()
    clips = load_file(str(audio_file))["audio"][:2]
    reloaded = CalibratedEncoder.from_pretrained(create_clap(checkpoint=folders[0], seconds=SECONDS), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_modality("audio", clips), calibrated.encode_modality("audio", clips), rtol=0, atol=1e-6
        )
    with pytest.raises(DataError, match="other weights"):
        CalibratedEncoder.from_pretrained(create_clap(checkpoint=folders[1], seconds=SECONDS), tmp_path)
