"""Audio: mono waveforms at a stated sample rate, amplitudes in [-1, 1]."""

from __future__ import annotations

from bindguard._types import Modality
from bindguard.modalities.base import InputSpec


def audio_spec(samples: int, sample_rate: int) -> InputSpec:
    """Waveforms, (B, S), amplitude in [-1, 1]; the encoder computes its spectrogram differentiably.

    A black-box window is a contiguous run of samples (the waveform is the grid's W axis).
    """
    return InputSpec(
        Modality.AUDIO,
        "B,S",
        (samples,),
        (-1.0, 1.0),
        "amplitude",
        sample_rate=sample_rate,
        grid_axes=("W",),
        purifier="waveform",
    )
