"""A differentiable waveform -> log-mel front end written with torch ops, so attacks can perturb the waveform."""

from __future__ import annotations

import math

import torch
from torch import nn

FLOOR = 1e-6  # power added before the logarithm: what silence maps to


def hz_to_mel(frequency: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + frequency / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 20.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK mel filters, (n_fft // 2 + 1, n_mels), each peaking at 1."""
    f_max = f_max or sample_rate / 2
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2, dtype=torch.float64)
    )
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


class LogMel(nn.Module):
    """Waveform (B, S) -> log-mel power spectrogram (B, n_mels, frames).

    Uses a periodic Hann window, centred frames with reflection padding, and log(mel + floor), floor
    1e-6. The floor is a buffer outside the state dict (the weights' fingerprint does not see it), so a
    calibration can replace it through ``functional_call`` (the ``floor`` part).
    """

    def __init__(
        self, *, sample_rate: int, n_fft: int = 512, window_ms: float = 25.0, hop_ms: float = 10.0, n_mels: int = 64
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = int(round(sample_rate * window_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)
        self.register_buffer("floor", torch.tensor(FLOOR), persistent=False)

    def frames(self, samples: int) -> int:
        return 1 + samples // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, F, frames)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.einsum("bft,fm->bmt", power, self.filters)  # (B, n_mels, frames)
        return torch.log(mel + self.floor)


def log_mel_floor() -> float:
    """The value a silent frame maps to."""
    return math.log(FLOOR)
