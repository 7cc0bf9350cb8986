"""Waveforms as WAV bytes, so the report can play clean and adversarial audio side by side."""

from __future__ import annotations

import io
import wave

import numpy as np


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono PCM of a waveform in [-1, 1] (values outside are clipped).

    Shape:
        waveform: (S,).
    """
    pcm = (np.clip(np.asarray(waveform, dtype=np.float64), -1, 1) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as stream:
        stream.setnchannels(1)
        stream.setsampwidth(2)
        stream.setframerate(sample_rate)
        stream.writeframes(pcm.tobytes())
    return buffer.getvalue()
