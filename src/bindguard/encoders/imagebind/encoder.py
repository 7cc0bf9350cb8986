"""ImageBind as a bindguard ``Encoder``: raw image, video, audio, depth, thermal and text in, embeddings out.

Raw inputs (what attacks perturb), and what happens to them inside, differentiably:

- image (B, 3, 224, 224) RGB in [0, 1]: CLIP mean/std, then the vision tower (as a still 2-frame clip).
- video (B, T, 3, 224, 224) RGB frames in [0, 1], T even (default 4): frames 2k and 2k + 1 form
  clip k, each clip goes through the vision tower, and the unit-norm clip embeddings are averaged
  (upstream samples 2 frames from each 2 s of video, so give frames in that order).
- audio (B, S) 16 kHz mono waveform in [-1, 1], S fixed (default 80,000 = 5 s, the length of
  ESC-50 clips): three 2 s clips at evenly spaced starts, Kaldi log-mel (``fbank.py``), the audio
  tower, the unit-norm clip embeddings averaged.
- depth (B, 1, 224, 224) and thermal (B, 1, 224, 224) maps in [0, 1], fed as they are. Upstream
  publishes no official depth or thermal preprocessing (ImageBind issues #14, #69, #107, #134;
  PR #73, where a user reports LLVIP thermal accuracy close to the paper's only without the
  image normalisation), so bring depth as normalised disparity and thermal as intensity.
- text: a list of strings, CLIP BPE (``tokenizer.py``), the end-of-text token's feature.

``_embed`` returns the head output (before ImageBind's normalise-and-scale postprocessor) for single
inputs, and the mean of the unit-norm clip embeddings for video and audio; normalised, it is the
direction of upstream's output exactly (the postprocessor's constant scale does not move it).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.encoders.base import Encoder, fingerprint_tensors
from bindguard.encoders.imagebind.checkpoint import PUBLISHED_URL, check_fit, read_state
from bindguard.encoders.imagebind.config import CLIP_FRAMES, CONTEXT_LENGTH, HUGE, IMAGE_SIZE, get_config
from bindguard.encoders.imagebind.fbank import FRAME_LENGTH, SAMPLE_RATE, clip_spectrograms, clip_starts
from bindguard.encoders.imagebind.model import TEXT_MASK, ImageBindNetwork, causal_mask
from bindguard.encoders.imagebind.tokenizer import tokenize
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.modalities import InputSpec, audio_spec, depth_spec, image_spec, thermal_spec, video_spec

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_AUDIO_SAMPLES = 5 * SAMPLE_RATE
DEFAULT_VIDEO_FRAMES = 2 * CLIP_FRAMES
# bindguard modality -> the checkpoint's tower key
TOWERS = {
    Modality.IMAGE: "vision",
    Modality.VIDEO: "vision",
    Modality.AUDIO: "audio",
    Modality.DEPTH: "depth",
    Modality.THERMAL: "thermal",
    Modality.TEXT: "text",
}


class ImageBind(Encoder):
    """ImageBind (image, video, audio, depth, thermal, text); build it with ``create_imagebind``.

    The IMU tower is part of the network (so official checkpoints load strictly) but bindguard has
    no IMU modality, so it is not exposed.

    Args:
        network: the (frozen) six-tower network.
        audio_samples: the fixed waveform length, at 16 kHz (at least 400: one 25 ms frame).
        video_frames: the fixed number of frames, even (clips of 2).
    """

    name = "imagebind"
    modalities = tuple(TOWERS)

    def __init__(
        self,
        network: ImageBindNetwork,
        *,
        audio_samples: int = DEFAULT_AUDIO_SAMPLES,
        video_frames: int = DEFAULT_VIDEO_FRAMES,
    ):
        super().__init__()
        if isinstance(audio_samples, bool) or not isinstance(audio_samples, int) or audio_samples < FRAME_LENGTH:
            raise ConfigError(
                f"audio_samples must be an integer >= {FRAME_LENGTH} (one 25 ms frame), got {audio_samples!r}"
            )
        if (
            isinstance(video_frames, bool)
            or not isinstance(video_frames, int)
            or video_frames < CLIP_FRAMES
            or video_frames % CLIP_FRAMES
        ):
            raise ConfigError(f"video_frames must be a positive even integer (clips of 2 frames), got {video_frames!r}")
        self.network = network
        self.embed_dim = network.config.out_dim
        # identical clip starts (waveforms of 2 s or less) are embedded once and weighted by their count
        counts = Counter(clip_starts(audio_samples))
        self._audio_starts = sorted(counts)
        self._audio_weights = [counts[start] / sum(counts.values()) for start in self._audio_starts]
        plane = {"mean": None, "std": None}  # depth and thermal are fed as given: see the module docstring
        self._specs = {
            Modality.IMAGE: image_spec(IMAGE_SIZE, IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD),
            Modality.VIDEO: video_spec(video_frames, IMAGE_SIZE, IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD),
            Modality.AUDIO: audio_spec(audio_samples, SAMPLE_RATE),
            Modality.DEPTH: dataclasses.replace(depth_spec(IMAGE_SIZE, IMAGE_SIZE), **plane),
            Modality.THERMAL: dataclasses.replace(thermal_spec(IMAGE_SIZE, IMAGE_SIZE), **plane),
        }

    # --- contract --------------------------------------------------------------------------------

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            raise UnknownNameError("text is given as a list of strings; it has no tensor input spec")
        return self._specs[modality]

    def logit_scale(self, modality: Modality | str) -> float:
        """The scale each modality was trained with against its partner, exp(log_logit_scale) capped at 100.

        Audio (20), depth (5) and thermal (10) have their own, fixed when they were bound to images.
        Text's is learned (CLIP's). Image and video have none in the checkpoint: they were trained
        against text with text's scale, so they take it.
        """
        modality = self.check_modality(modality)
        own = self.network.logit_scale(TOWERS[modality])
        return own if own is not None else float(self.network.logit_scale("text"))

    @property
    def text_identity(self) -> str:
        """Only the text tower (and the tokenizer, fixed by the vocabulary size) decides the semantic centers."""
        cached = self.__dict__.get("_text_fingerprint")
        if cached is None:
            text = {name: tensor for name, tensor in self.network.state_dict().items() if ".text." in name}
            cached = fingerprint_tensors(text)
            self.__dict__["_text_fingerprint"] = cached
        return f"{self.name}-text@{cached}"

    # --- embedding -----------------------------------------------------------------------------

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        network = self.network
        if modality is Modality.TEXT:
            ids = tokenize(list(x), vocab_size=network.config.vocab_size).to(self.device)
            return network.features("text", ids)
        if modality is Modality.IMAGE:
            return network.features("vision", self._specs[modality].normalize(x))
        if modality is Modality.VIDEO:
            return self._embed_video(x)
        if modality is Modality.AUDIO:
            return self._embed_audio(x)
        return network.features(TOWERS[modality], x)  # depth, thermal

    def _embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        batch, count = frames.shape[:2]
        frames = self._specs[Modality.VIDEO].normalize(frames)  # (B, T, 3, H, W)
        clips = frames.view(batch, count // CLIP_FRAMES, CLIP_FRAMES, *frames.shape[2:]).transpose(2, 3)
        embeddings = self.network.features("vision", clips.flatten(0, 1))  # (B*S, D) from (B*S, 3, 2, H, W)
        return F.normalize(embeddings, dim=-1).view(batch, count // CLIP_FRAMES, -1).mean(1)

    def _embed_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        spectrograms = clip_spectrograms(waveform, self._audio_starts)  # (B, C, 1, 128, 204)
        embeddings = self.network.features("audio", spectrograms.flatten(0, 1))  # (B*C, D)
        embeddings = F.normalize(embeddings, dim=-1).view(waveform.shape[0], len(self._audio_starts), -1)
        weights = torch.tensor(self._audio_weights, dtype=embeddings.dtype, device=embeddings.device)
        return (embeddings * weights[:, None]).sum(1)


def create_imagebind(
    *,
    checkpoint: str | Path | None = None,
    config: str = "huge",
    device: str | torch.device = "cpu",
    audio_samples: int = DEFAULT_AUDIO_SAMPLES,
    video_frames: int = DEFAULT_VIDEO_FRAMES,
    seed: int = 0,
    weights: str | Path | None = None,
) -> ImageBind:
    """Build ImageBind, frozen and in eval mode, from a checkpoint (or, at the tiny size, random weights).

    Args:
        checkpoint: ``imagebind_huge.pth`` (or a ``.safetensors`` copy, or a UniBind/Point-Bind file
            holding it under ``backbone.bind.``); every key must fit, or nothing loads.
        config: ``"huge"`` (the official model) or ``"tiny"`` (tests: random weights from ``seed``
            when no checkpoint is given).
        device: where the weights go.
        audio_samples, video_frames: the fixed raw lengths of audio and video (see the module docstring).
        seed: the random weights' seed (tiny config without a checkpoint).
        weights: an alias of ``checkpoint`` (the name the CLI's ``--weights`` passes).

    Raises:
        DataError: without a checkpoint at the huge size (where to get it), or for a checkpoint
            that is unreadable, holds more than tensors, or does not fit the model.
        ConfigError: for both ``checkpoint`` and ``weights``.
        UnknownNameError: for an unknown config.
    """
    if checkpoint is not None and weights is not None:
        raise ConfigError("give the ImageBind checkpoint once, as checkpoint= or weights=, not both")
    checkpoint = checkpoint if checkpoint is not None else weights
    sizes = get_config(config)
    if checkpoint is None and sizes is HUGE:
        raise DataError(
            f"ImageBind needs its weights: download imagebind_huge.pth from {PUBLISHED_URL} (4.8 GB; "
            "CC-BY-NC-SA 4.0, non-commercial use only) and pass its path: "
            "--checkpoint PATH (Python: create_encoder('imagebind-huge', checkpoint=PATH))"
        )
    if checkpoint is None:
        # seeded random weights without touching the caller's random state
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            network = ImageBindNetwork(sizes)
    else:
        state = read_state(checkpoint)
        with torch.device("meta"):  # no memory for weights that are about to be replaced
            network = ImageBindNetwork(sizes)
        check_fit(
            network.state_dict(),
            state,
            source=f"ImageBind checkpoint {checkpoint} ({sizes.name} config)",
            constants={TEXT_MASK: causal_mask(CONTEXT_LENGTH)},
        )
        state = {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
        network.load_state_dict(state, strict=True, assign=True)
    network.requires_grad_(False)
    network.eval()
    encoder = ImageBind(network.to(device), audio_samples=audio_samples, video_frames=video_frames)
    encoder.eval()
    return encoder
