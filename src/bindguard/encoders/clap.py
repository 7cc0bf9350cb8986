"""CLAP on transformers' ``ClapModel``, from a Hugging Face model folder: audio and text.

Audio is a raw mono waveform at the model's 48 kHz, amplitudes in [-1, 1], differentiable end
to end: the log-mel front end is bindguard's torch version of ``ClapFeatureExtractor``
(``clap_features.py``), with the folder's own filter bank and settings, and ``is_longer`` is
always False, so the encoder is deterministic (the extractor is not).

The raw clip length is fixed per encoder (``seconds``, at most the model's 10 s): the input
spec is ``(B, seconds * 48000)``. A shorter clip is padded to 10 s inside the model as the
extractor pads it (``repeatpad``: whole repeats, then zeros), so an attack perturbs only the
samples the user gave and their repeats move together. Longer clips are not accepted: the
extractor would crop them at random (or fuse random crops).

Text goes through the folder's RoBERTa tokenizer, cut at 77 tokens as laion_clap's training did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bindguard._optional import require
from bindguard._types import Modality
from bindguard.encoders.base import DEFAULT_LOGIT_SCALE, Encoder
from bindguard.encoders.clap_features import ClapLogMel
from bindguard.encoders.clip import checkpoint_folder, load_strict, read_config_json, read_state, read_tokenizer
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.modalities import InputSpec, audio_spec

EXTRA = "clap"
CLAP_FOLDERS = "laion/clap-htsat-unfused, laion/clap-htsat-fused, laion/larger_clap_general"
TEXT_LENGTH = 77  # laion_clap tokenised RoBERTa text to 77 tokens in training
FUSED_CHANNELS = 4  # the fusion input: the whole clip plus three crops, all the whole clip here
# laion_clap's HTSAT audio settings, for folders without preprocessor_config.json
LAION_AUDIO = {
    "sampling_rate": 48_000,
    "hop_length": 480,
    "fft_window_size": 1024,
    "max_length_s": 10,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "padding": "repeatpad",
}


class CLAPEncoder(Encoder):
    """A frozen ``transformers.ClapModel`` with its tokenizer and a torch log-mel; audio and text.

    Build it with ``create_clap``.

    Args:
        model: the CLAP model (frozen and put in eval mode here).
        tokenizer: a transformers tokenizer for its RoBERTa text tower.
        front_end: waveform -> the audio tower's input features.
        sample_rate: of the raw waveform (the model's).
        samples: raw clip length in samples, at most ``front_end.max_samples``.
        fingerprint: hash of the loaded weights (None: hashed from the model's state on first use).
    """

    name = "clap"
    modalities = (Modality.AUDIO, Modality.TEXT)

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        front_end: ClapLogMel,
        *,
        sample_rate: int,
        samples: int,
        fingerprint: str | None = None,
    ):
        super().__init__()
        if not 0 < samples <= front_end.max_samples:
            raise ConfigError(f"a CLAP clip holds 1 to {front_end.max_samples} samples, got {samples}")
        self.model = model
        self.tokenizer = tokenizer
        self.front_end = front_end
        config = model.config
        self.embed_dim = int(config.projection_dim)
        text = config.text_config
        self.max_text_length = min(TEXT_LENGTH, int(text.max_position_embeddings) - int(text.pad_token_id) - 1)
        self.spec = audio_spec(samples, sample_rate)
        if fingerprint is not None:
            self.__dict__["_fingerprint"] = fingerprint
        self.requires_grad_(False)
        self.eval()

    def logit_scale(self, modality: Modality | str) -> float:
        """exp of the checkpoint's temperature for logits of this modality's queries, clamped at 100.

        CLAP learns two: ``logit_scale_a`` scales audio-to-text logits, ``logit_scale_t`` text-to-audio.
        """
        modality = self.check_modality(modality)
        scale = self.model.logit_scale_a if modality is Modality.AUDIO else self.model.logit_scale_t
        return min(float(scale.detach().exp()), DEFAULT_LOGIT_SCALE)

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            raise UnknownNameError("text is given as a list of strings; it has no tensor input spec")
        return self.spec

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            tokens = self.tokenizer(
                list(x), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
            )
            device = self.model.logit_scale_t.device
            pooled = self.model.text_model(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            ).pooler_output  # (B, width): the <s> token through RoBERTa's pooler
            return self.model.text_projection(pooled)  # (B, D)
        features = self.front_end(x)  # (B, C, frames, mels), dB
        is_longer = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)  # clips are <= 10 s
        pooled = self.model.audio_model(input_features=features, is_longer=is_longer).pooler_output  # (B, width)
        return self.model.audio_projection(pooled)  # (B, D)


def feature_extractor(folder: Path, audio_config: Any) -> Any:
    """The folder's ``ClapFeatureExtractor`` (``preprocessor_config.json``), else one with laion_clap's settings.

    Raises:
        DataError: when its mel bins or truncation mode do not fit the audio tower.
    """
    transformers = require("transformers", extra=EXTRA)
    fused = bool(audio_config.enable_fusion)
    path = folder / "preprocessor_config.json"
    if path.is_file():
        try:
            extractor = transformers.ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise DataError(f"{path} does not load as a ClapFeatureExtractor ({error})") from None
    else:
        truncation = "fusion" if fused else "rand_trunc"
        extractor = transformers.ClapFeatureExtractor(
            feature_size=int(audio_config.num_mel_bins), truncation=truncation, **LAION_AUDIO
        )
    if int(extractor.feature_size) != int(audio_config.num_mel_bins):
        raise DataError(
            f"{path}: feature_size {extractor.feature_size} mel bins, but the audio tower takes "
            f"{audio_config.num_mel_bins} (config.json num_mel_bins)"
        )
    if (extractor.truncation == "fusion") != fused:
        raise DataError(
            f"{path}: truncation {extractor.truncation!r} does not fit an audio tower with enable_fusion={fused} "
            "(fused models take 'fusion', unfused ones 'rand_trunc')"
        )
    return extractor


def front_end_for(extractor: Any, *, fused: bool) -> ClapLogMel:
    """The torch log-mel that reproduces ``extractor`` for clips of at most its ``max_length_s``."""
    # the extractor's own rule: HTK filters with fusion, Slaney (librosa's default) without
    filters = extractor.mel_filters if fused else extractor.mel_filters_slaney
    return ClapLogMel(
        torch.from_numpy(filters),
        n_fft=int(extractor.fft_window_size),
        hop_length=int(extractor.hop_length),
        max_samples=int(extractor.nb_max_samples),
        padding=str(extractor.padding),
        channels=FUSED_CHANNELS if fused else 1,
    )


def clip_samples(seconds: float, sample_rate: int, max_seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= max_seconds:
        raise ConfigError(
            f"seconds must be a number in (0, {max_seconds:g}] (the model's clip length), got {seconds!r}; "
            "longer audio must be cut into clips"
        )
    return max(1, math.floor(seconds * sample_rate + 0.5))


def create_clap(
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    seconds: float = 10.0,
    device: str | torch.device = "cpu",
) -> CLAPEncoder:
    """CLAP from a Hugging Face folder (``config.json``, weights, tokenizer files), frozen, in eval mode.

    Args:
        checkpoint: the folder, e.g. a download of ``laion/clap-htsat-unfused``; nothing is downloaded.
        weights: the same, under the name the CLI's ``--weights`` passes.
        seconds: raw clip length (at most 10); shorter clips are repeat-padded to 10 s inside.
        device: where the model runs.

    Raises:
        DataError: no folder given, or a folder with a missing, corrupt or mismatched file.
        ConfigError: for ``seconds`` outside (0, 10].
        MissingDependencyError: transformers is not installed.
    """
    folder = checkpoint_folder(
        checkpoint, weights, kind="CLAP", published=CLAP_FOLDERS, option="checkpoint=DIR (CLI: --checkpoint DIR)"
    )
    transformers = require("transformers", extra=EXTRA)
    transformers.utils.logging.set_verbosity_error()
    config = transformers.ClapConfig.from_dict(read_config_json(folder, model_type="clap", kind="CLAP"))
    extractor = feature_extractor(folder, config.audio_config)
    samples = clip_samples(seconds, int(extractor.sampling_rate), float(extractor.max_length_s))
    state, source = read_state(folder, kind="CLAP")
    model = transformers.ClapModel(config)
    fingerprint = load_strict(model, state, source=source)
    tokenizer = read_tokenizer(
        folder, transformers.RobertaTokenizer, kind="CLAP", vocab_size=int(config.text_config.vocab_size)
    )
    front_end = front_end_for(extractor, fused=bool(config.audio_config.enable_fusion))
    encoder = CLAPEncoder(
        model, tokenizer, front_end, sample_rate=int(extractor.sampling_rate), samples=samples, fingerprint=fingerprint
    )
    return encoder.to(device)
