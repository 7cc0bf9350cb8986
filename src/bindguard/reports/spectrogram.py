"""A numpy log-mel spectrogram for pictures: the same framing as the encoders' front end, without torch."""

from __future__ import annotations

import numpy as np

N_FFT = 512
WINDOW_MS = 25.0
HOP_MS = 10.0
N_MELS = 64
FLOOR = 1e-6


def hz_to_mel(frequency: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(frequency) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def band_centres(sample_rate: int, n_mels: int = N_MELS, f_min: float = 20.0) -> np.ndarray:
    """Centre frequency (Hz) of each mel band, to label the frequency axis."""
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(sample_rate / 2), n_mels + 2))
    return edges[1:-1]


def _filterbank(sample_rate: int, n_mels: int, f_min: float = 20.0) -> np.ndarray:
    bins = np.linspace(0, sample_rate / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0, None)  # (F, n_mels)


def log_mel(waveform: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """Natural-log mel power of a waveform.

    Shape:
        waveform: (S,) -> (n_mels, frames), frames = 1 + S // hop.
    """
    window_length = int(round(sample_rate * WINDOW_MS / 1000))
    hop = int(round(sample_rate * HOP_MS / 1000))
    window = np.zeros(N_FFT)
    offset = (N_FFT - window_length) // 2  # centred in the FFT frame, as torch.stft pads a short window
    window[offset : offset + window_length] = np.hanning(window_length + 1)[:-1]  # periodic Hann
    padded = np.pad(np.asarray(waveform, dtype=np.float64), N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - N_FFT) // hop
    starts = np.arange(frames)[:, None] * hop + np.arange(N_FFT)[None, :]
    spectrum = np.fft.rfft(padded[starts] * window, axis=1)  # (frames, F)
    power = spectrum.real**2 + spectrum.imag**2
    return np.log(power @ _filterbank(sample_rate, n_mels) + FLOOR).T  # (n_mels, frames)
