"""The built-in benchmark: the ten digits in image, video, audio, point cloud, depth, thermal and events.

Glyphs are scikit-learn's handwritten digits (1,797 samples from 43 writers); the glyph-derived
modalities of one instance share its source glyph and its pose, so instance-level cross-modal
retrieval has a right answer. Audio is the shipped espeak-ng spoken-digit set. Train and test
are disjoint by source glyph, and by voice for audio.

The native sizes are ``NATIVE_SHAPES`` (32-px maps, 4-frame clips, 4-bin event tensors, 256
points, one second at 16 kHz). An encoder that expects other sizes asks ``load_builtin`` for them with ``shapes`` and
``sample_rate``; every size is rendered deterministically from the same scenes (see ``load_builtin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from bindguard._types import Modality
from bindguard.data.builtin import render
from bindguard.data.builtin.spoken_digits import DIGIT_WORDS, SAMPLE_RATE, load_spoken_digits, voice_split
from bindguard.data.rows import Rows
from bindguard.errors import ConfigError, DataError

SPLITS = ("train", "test")
MODALITIES = (
    Modality.IMAGE,
    Modality.VIDEO,
    Modality.AUDIO,
    Modality.POINT,
    Modality.DEPTH,
    Modality.THERMAL,
    Modality.EVENT,
)
GLYPH_TEST_FRACTION = 0.2
AUDIO_SAMPLES = SAMPLE_RATE  # one-second windows

# Per-sample shape of each modality when no other is asked for; the shipped TinyBind is trained on these.
NATIVE_SHAPES: dict[Modality, tuple[int, ...]] = {
    Modality.IMAGE: (3, render.CANVAS, render.CANVAS),
    Modality.VIDEO: (render.FRAMES, 3, render.CANVAS, render.CANVAS),
    Modality.AUDIO: (AUDIO_SAMPLES,),
    Modality.POINT: (render.POINTS, 3),
    Modality.DEPTH: (1, render.CANVAS, render.CANVAS),
    Modality.THERMAL: (1, render.CANVAS, render.CANVAS),
    Modality.EVENT: (render.EVENT_BINS, 2, render.CANVAS, render.CANVAS),
}
# The form a requested shape must have: (written form, {axis: the size it must have}).
_SHAPE_FORMS: dict[Modality, tuple[str, dict[int, int]]] = {
    Modality.IMAGE: ("(3, H, W)", {0: 3}),
    Modality.VIDEO: ("(T, 3, H, W)", {1: 3}),
    Modality.AUDIO: ("(S,)", {}),
    Modality.POINT: ("(N, 3)", {1: 3}),
    Modality.DEPTH: ("(1, H, W)", {0: 1}),
    Modality.THERMAL: ("(1, H, W)", {0: 1}),
    Modality.EVENT: ("(T, 2, H, W)", {1: 2}),
}

# Prompt templates per modality; a class's semantic center is the mean of their text embeddings.
TEMPLATES: dict[Modality, tuple[str, ...]] = {
    Modality.IMAGE: ("a photo of the digit {}.", "a picture of the number {}.", "an image of a handwritten {}."),
    Modality.VIDEO: ("a video of the digit {}.", "a clip of the number {} moving.", "footage of a handwritten {}."),
    Modality.AUDIO: ("a recording of someone saying {}.", "the spoken word {}.", "a voice saying the number {}."),
    Modality.POINT: ("a point cloud of the digit {}.", "a 3D shape of the number {}.", "a 3D model of a {}."),
    Modality.DEPTH: ("a depth map of the digit {}.", "a depth image of the number {}.", "the shape of a {} in depth."),
    Modality.THERMAL: (
        "a thermal image of the digit {}.",
        "a heat map of the number {}.",
        "an infrared photo of a {}.",
    ),
    Modality.EVENT: (
        "an event camera recording of the digit {}.",
        "the events of a moving number {}.",
        "a neuromorphic image of a {}.",
    ),
}

_RENDERERS = {
    Modality.IMAGE: render.render_image,
    Modality.VIDEO: render.render_video,
    Modality.POINT: render.render_points,
    Modality.DEPTH: render.render_depth,
    Modality.THERMAL: render.render_thermal,
}


@dataclass(frozen=True)
class ModalityData:
    """One modality of a split.

    Attributes:
        inputs: raw inputs, (B, ...) in the modality's domain: a tensor, or rows read on demand
            (``data.rows.Rows``: a length and ``inputs[index]`` batches).
        labels: (B,) class indices.
        instance_ids: (B,) source-sample ids; equal ids across modalities mean the same instance.
        source: what the ids index (``"glyph"`` or ``"spoken"``); ids from different sources never match.
        captions: per sample, the sentences that describe it (caption retrieval), if the data set has them.
    """

    inputs: torch.Tensor | Rows
    labels: torch.Tensor
    instance_ids: torch.Tensor
    source: str
    captions: tuple[tuple[str, ...], ...] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Benchmark:
    """A labelled multimodal data set with its class names and prompt templates.

    ``centers``, when set, are fixed semantic centers to score against instead of embedding the
    templates with the text tower: (C, D), or (C, K, D) for several descriptions per class
    (UniBind-style, scored by the nearest of the K).
    """

    name: str
    split: str
    class_names: tuple[str, ...]
    templates: dict[Modality, tuple[str, ...]]
    data: dict[Modality, ModalityData]
    centers: torch.Tensor | None = None

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(self.data)


def spoken_digits_path() -> Path:
    return Path(str(resources.files("bindguard.data.builtin") / "assets" / "spoken_digits.zip"))


@lru_cache(maxsize=1)
def _glyphs() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # scikit-learn ships this set; imported here to keep import light

    digits = load_digits()
    return torch.tensor(digits.images / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


def glyph_split(split: str) -> torch.Tensor:
    """Indices of the glyphs in ``split``; a fixed permutation keeps test glyphs out of training."""
    count = _glyphs()[1].shape[0]
    order = torch.from_numpy(np.random.RandomState(0).permutation(count))
    test_count = int(round(count * GLYPH_TEST_FRACTION))
    return order[:test_count].sort().values if split == "test" else order[test_count:].sort().values


def _render(
    modality: Modality, split: str, variant: int, indices: torch.Tensor, shape: tuple[int, ...], limit: int | None
) -> torch.Tensor:
    """(min(B, limit), *shape) renderings: clips and clouds drawn at length, maps on the native canvas.

    Every glyph of the split is drawn (the random draws are batched, so drawing fewer would change
    them); only the kept ones are resized, which is deterministic per sample and the costly step
    at large sizes.
    """
    glyphs = _glyphs()[0][indices]
    split_code = SPLITS.index(split)
    pose_seed = 7919 * variant + 104_729 * split_code + 1  # shared by every modality of an instance
    style = torch.Generator().manual_seed(pose_seed * 31 + MODALITIES.index(modality) + 1)
    if modality is Modality.POINT:
        return render.render_points(glyphs, pose_seed, style, point_count=shape[0])[:limit]
    if modality is Modality.VIDEO:
        drawn = render.render_video(glyphs, pose_seed, style, frames=shape[0])
    elif modality is Modality.EVENT:
        drawn = render.render_events(glyphs, pose_seed, style, bins=shape[0])
    else:
        drawn = _RENDERERS[modality](glyphs, pose_seed, style)
    return render.resize(drawn[:limit], *shape[-2:])


def _positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_shapes(
    shapes: Mapping[Modality | str, Sequence[int]] | None, sample_rate: int | None
) -> dict[Modality, tuple[int, ...]]:
    """The per-sample shape of every modality: ``NATIVE_SHAPES`` overridden by ``shapes``, each checked.

    Audio at another ``sample_rate`` and no asked-for shape keeps one-second windows.
    """
    if sample_rate is not None and not _positive_int(sample_rate):
        raise ConfigError(f"sample_rate must be a positive integer (samples per second), got {sample_rate!r}")
    resolved = dict(NATIVE_SHAPES)
    if sample_rate is not None:
        resolved[Modality.AUDIO] = (round(AUDIO_SAMPLES * sample_rate / SAMPLE_RATE),)
    for key, requested in (shapes or {}).items():
        modality = Modality.parse(key)
        if modality not in MODALITIES:
            raise ConfigError(
                f"the built-in benchmark has no {modality.value!r} data to shape; allowed: "
                f"{', '.join(m.value for m in MODALITIES)}"
            )
        form, fixed = _SHAPE_FORMS[modality]
        shape = tuple(requested) if isinstance(requested, Sequence) else (requested,)
        if (
            len(shape) != len(NATIVE_SHAPES[modality])
            or not all(_positive_int(size) for size in shape)
            or any(shape[axis] != size for axis, size in fixed.items())
        ):
            raise ConfigError(
                f"built-in {modality.value} samples have shape {form} of positive sizes, got {shape}; "
                f"fix: ask for a shape like {NATIVE_SHAPES[modality]}"
            )
        resolved[modality] = tuple(int(size) for size in shape)
    return resolved


def _fit_length(waveforms: np.ndarray, samples: int) -> np.ndarray:
    """(B, samples): centred crop, or centred zero padding, of (B, S) waveforms."""
    length = waveforms.shape[1]
    if length >= samples:
        start = (length - samples) // 2
        return waveforms[:, start : start + samples]
    before = (samples - length) // 2
    return np.pad(waveforms, ((0, 0), (before, samples - length - before)))


@lru_cache(maxsize=1)
def _clips(path: str) -> tuple:
    return tuple(load_spoken_digits(Path(path)))


def _audio(split: str, variant: int, path: Path, samples: int, sample_rate: int, limit: int | None) -> ModalityData:
    """One-second noisy windows at 16 kHz, resampled to ``sample_rate``, fitted to ``samples``, in [-1, 1].

    Every clip's window is drawn (one random stream runs through them all); only the kept ones
    are resampled, row by row independent, so a limit changes nothing in the rows it keeps.
    """
    clips = _clips(str(path))
    train_voices, test_voices = voice_split(sorted({clip.voice for clip in clips}))
    voices = test_voices if split == "test" else train_voices
    chosen = [index for index, clip in enumerate(clips) if clip.voice in voices]
    generator = np.random.default_rng([SPLITS.index(split), variant])
    waveforms = np.zeros((len(chosen), AUDIO_SAMPLES), dtype=np.float32)
    for row, index in enumerate(chosen):
        clip = clips[index].waveform[:AUDIO_SAMPLES]
        start = int(generator.integers(0, AUDIO_SAMPLES - len(clip) + 1))
        waveforms[row, start : start + len(clip)] = clip
        # background noise at a random signal-to-noise ratio between 10 and 30 dB
        power = float(np.mean(clip**2))
        snr_db = generator.uniform(10.0, 30.0)
        waveforms[row] += generator.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), AUDIO_SAMPLES).astype(np.float32)
    chosen, waveforms = chosen[:limit], waveforms[:limit]
    if sample_rate != SAMPLE_RATE:
        divisor = gcd(sample_rate, SAMPLE_RATE)
        waveforms = resample_poly(waveforms, sample_rate // divisor, SAMPLE_RATE // divisor, axis=1)
        waveforms = waveforms.astype(np.float32)
    if waveforms.shape[1] != samples:
        waveforms = np.ascontiguousarray(_fit_length(waveforms, samples))
    labels = torch.tensor([clips[index].digit for index in chosen], dtype=torch.long)
    inputs = torch.from_numpy(waveforms).clamp(-1.0, 1.0)
    return ModalityData(inputs, labels, torch.tensor(chosen, dtype=torch.long), "spoken")


def load_builtin(
    *,
    split: str = "test",
    modalities: tuple[Modality, ...] | list[Modality] = MODALITIES,
    variant: int = 0,
    limit: int | None = None,
    audio_path: Path | None = None,
    shapes: Mapping[Modality | str, Sequence[int]] | None = None,
    sample_rate: int | None = None,
) -> Benchmark:
    """Load (render) the built-in benchmark.

    Other sizes than ``NATIVE_SHAPES`` are rendered from the same scenes, deterministically:
    image, depth and thermal maps (and video frames) are drawn on the native 32-px canvas, then
    resized to (H, W) with antialiased bilinear interpolation; a clip of T frames samples the same
    sliding path at T evenly spaced positions; an event tensor of T bins bins the events of that
    path (``render.render_events``) into T, its densities resized like maps; a cloud of N points draws N points from the glyph;
    audio is the native 16 kHz one-second window resampled to ``sample_rate`` (polyphase,
    ``scipy.signal.resample_poly``), centre-cropped or zero-padded to S samples, clamped to [-1, 1].

    Args:
        split: ``"train"`` or ``"test"``.
        modalities: which modalities to render.
        variant: 0 is the canonical rendering; other values give new poses, colours and noise
            (training augmentations).
        limit: keep at most this many samples per modality (the first ones, stratification aside).
        audio_path: the spoken-digit archive; defaults to the one shipped in the package.
        shapes: per-sample shape per modality, e.g. ``{Modality.IMAGE: (3, 224, 224),
            Modality.VIDEO: (8, 3, 224, 224), Modality.POINT: (1024, 3), Modality.AUDIO: (32000,)}``;
            modalities left out keep their native shape.
        sample_rate: audio samples per second (default 16,000); without an audio shape the
            windows stay one second long.

    Raises:
        ConfigError: for an unknown split, a non-positive limit, a shape whose form or channel
            count does not fit its modality, or a non-positive sample rate.
        DataError: when the audio archive is missing or corrupt.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    resolved = _check_shapes(shapes, sample_rate)
    data: dict[Modality, ModalityData] = {}
    indices = glyph_split(split)
    labels = _glyphs()[1][indices]
    for modality in map(Modality.parse, modalities):  # names such as "audio" are accepted too
        if modality not in MODALITIES:
            raise ConfigError(
                f"the built-in benchmark has no {modality.value!r} data; allowed: {', '.join(m.value for m in MODALITIES)}"
            )
        if modality is Modality.AUDIO:
            path = audio_path or spoken_digits_path()
            item = _audio(split, variant, path, resolved[modality][0], sample_rate or SAMPLE_RATE, limit)
        else:
            item = ModalityData(
                _render(modality, split, variant, indices, resolved[modality], limit), labels, indices, "glyph"
            )
        if limit is not None:
            item = ModalityData(item.inputs[:limit], item.labels[:limit], item.instance_ids[:limit], item.source)
        data[modality] = item
    if not data or any(len(item) == 0 for item in data.values()):
        raise DataError("the built-in benchmark selection is empty; choose at least one modality")
    return Benchmark("builtin", split, DIGIT_WORDS, {m: TEMPLATES[m] for m in data}, data)
