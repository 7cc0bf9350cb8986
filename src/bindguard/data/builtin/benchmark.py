"""The built-in benchmark: the ten digits in image, video, audio, point cloud, depth and thermal.

Glyphs are scikit-learn's handwritten digits (1,797 samples from 43 writers); the glyph-derived
modalities of one instance share its source glyph and its pose, so instance-level cross-modal
retrieval has a right answer. Audio is the shipped espeak-ng spoken-digit set. Train and test
are disjoint by source glyph, and by voice for audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bindguard._types import Modality
from bindguard.data.builtin import render
from bindguard.data.builtin.spoken_digits import DIGIT_WORDS, SAMPLE_RATE, load_spoken_digits, voice_split
from bindguard.errors import ConfigError, DataError

SPLITS = ("train", "test")
MODALITIES = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.POINT, Modality.DEPTH, Modality.THERMAL)
GLYPH_TEST_FRACTION = 0.2
AUDIO_SAMPLES = SAMPLE_RATE  # one-second windows

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
        inputs: raw inputs, (B, ...) in the modality's domain.
        labels: (B,) class indices.
        instance_ids: (B,) source-sample ids; equal ids across modalities mean the same instance.
        source: what the ids index (``"glyph"`` or ``"spoken"``); ids from different sources never match.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    instance_ids: torch.Tensor
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Benchmark:
    """A labelled multimodal data set with its class names and prompt templates."""

    name: str
    split: str
    class_names: tuple[str, ...]
    templates: dict[Modality, tuple[str, ...]]
    data: dict[Modality, ModalityData]

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


def _render(modality: Modality, split: str, variant: int, indices: torch.Tensor) -> torch.Tensor:
    glyphs = _glyphs()[0][indices]
    split_code = SPLITS.index(split)
    pose_seed = 7919 * variant + 104_729 * split_code + 1  # shared by every modality of an instance
    style = torch.Generator().manual_seed(pose_seed * 31 + MODALITIES.index(modality) + 1)
    return _RENDERERS[modality](glyphs, pose_seed, style)


@lru_cache(maxsize=1)
def _clips(path: str) -> tuple:
    return tuple(load_spoken_digits(Path(path)))


def _audio(split: str, variant: int, path: Path) -> ModalityData:
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
) -> Benchmark:
    """Load (render) the built-in benchmark.

    Args:
        split: ``"train"`` or ``"test"``.
        modalities: which modalities to render.
        variant: 0 is the canonical rendering; other values give new poses, colours and noise
            (training augmentations).
        limit: keep at most this many samples per modality (the first ones, stratification aside).
        audio_path: the spoken-digit archive; defaults to the one shipped in the package.

    Raises:
        ConfigError: for an unknown split or a non-positive limit.
        DataError: when the audio archive is missing or corrupt.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    data: dict[Modality, ModalityData] = {}
    indices = glyph_split(split)
    labels = _glyphs()[1][indices]
    for modality in modalities:
        if modality not in MODALITIES:
            raise ConfigError(
                f"the built-in benchmark has no {modality.value!r} data; allowed: {', '.join(m.value for m in MODALITIES)}"
            )
        if modality is Modality.AUDIO:
            item = _audio(split, variant, audio_path or spoken_digits_path())
        else:
            item = ModalityData(_render(modality, split, variant, indices), labels, indices, "glyph")
        if limit is not None:
            item = ModalityData(item.inputs[:limit], item.labels[:limit], item.instance_ids[:limit], item.source)
        data[modality] = item
    if not data or any(len(item) == 0 for item in data.values()):
        raise DataError("the built-in benchmark selection is empty; choose at least one modality")
    return Benchmark("builtin", split, DIGIT_WORDS, {m: TEMPLATES[m] for m in data}, data)
