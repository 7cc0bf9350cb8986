"""CLAP's log-mel front end in torch: differentiable from the raw 48 kHz waveform.

transformers' ``ClapFeatureExtractor`` computes the same features in numpy (not differentiable)
and draws random numbers: clips over 10 s are cropped at random, and in fusion mode a batch with
no clip over 10 s gets ``is_longer=True`` on a random sample. Here clips are at most 10 s, so
nothing is random: ``is_longer`` is always False and fused models get four identical channels.

The pipeline, per clip: pad to the model's 10 s (``repeatpad``: whole repeats of the clip, then
zeros), STFT (periodic Hann window, centred frames with reflect padding), power, the extractor's
own mel filters (Slaney-normalised for unfused models, HTK for fused ones), 10 log10 of the mel
power floored at 1e-10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bindguard.errors import ConfigError, InvalidInputError

PADDINGS = ("repeatpad", "repeat", "pad")
POWER_FLOOR = 1e-10  # the extractor's mel floor: 10 log10 gives -100 dB at most below 1


def pad_to(waveform: torch.Tensor, length: int, mode: str = "repeatpad") -> torch.Tensor:
    """(B, S) -> (B, length) for S <= length, as the extractor pads short clips (differentiable).

    ``repeatpad``: floor(length / S) whole copies, then zeros; ``repeat``: copies cut at ``length``;
    ``pad``: zeros.
    """
    samples = waveform.shape[-1]
    if samples > length:
        raise InvalidInputError(f"a CLAP clip holds at most {length} samples, got {samples}")
    if mode == "repeatpad":
        waveform = waveform.repeat(1, length // samples)
    elif mode == "repeat":
        waveform = waveform.repeat(1, length // samples + 1)[:, :length]
    elif mode != "pad":
        raise ConfigError(f"CLAP padding must be one of {', '.join(PADDINGS)}, got {mode!r}")
    return F.pad(waveform, (0, length - waveform.shape[-1]))


class ClapLogMel(nn.Module):
    """(B, S) waveform -> (B, channels, frames, mels) log-mel features in dB, as ``ClapFeatureExtractor``.

    Args:
        mel_filters: (n_fft // 2 + 1, mels) filter bank, e.g. ``ClapFeatureExtractor.mel_filters_slaney``.
        n_fft: STFT window and FFT size (the extractor's ``fft_window_size``).
        hop_length: samples between frames.
        max_samples: the model's clip length (``max_length_s * sampling_rate``); shorter clips are padded.
        padding: how short clips are padded (``pad_to``).
        channels: 1 for unfused models, 4 for fused ones (the fusion input with every channel the whole clip).

    Shape:
        (B, S) with S <= max_samples -> (B, channels, max_samples // hop_length + 1, mels).
    """

    def __init__(
        self,
        mel_filters: torch.Tensor,
        *,
        n_fft: int = 1024,
        hop_length: int = 480,
        max_samples: int = 480_000,
        padding: str = "repeatpad",
        channels: int = 1,
    ):
        super().__init__()
        mel_filters = torch.as_tensor(mel_filters, dtype=torch.float64)
        if mel_filters.dim() != 2 or mel_filters.shape[0] != n_fft // 2 + 1:
            raise ConfigError(
                f"mel_filters must be (n_fft // 2 + 1, mels) = ({n_fft // 2 + 1}, mels), got {tuple(mel_filters.shape)}"
            )
        if padding not in PADDINGS:
            raise ConfigError(f"CLAP padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.n_fft, self.hop_length, self.max_samples = n_fft, hop_length, max_samples
        self.padding, self.channels = padding, channels
        # constants of the front end, not weights: kept out of the state dict and the fingerprint. In float64,
        # cast per call: a float32 window is 2e-7 off at its tapered ends, 1e-4 dB on frames that end in silence
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel_filters", mel_filters, persistent=False)

    @property
    def frames(self) -> int:
        return self.max_samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        padded = pad_to(waveform, self.max_samples, self.padding)  # (B, max_samples)
        window = self.window.to(padded.dtype)
        spectrum = torch.stft(
            padded, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
        )  # (B, n_fft // 2 + 1, frames)
        power = torch.view_as_real(spectrum).square().sum(-1)  # (B, F, frames)
        mel = power.transpose(1, 2) @ self.mel_filters.to(padded.dtype)  # (B, frames, mels)
        log_mel = 10.0 * torch.log10(mel.clamp(min=POWER_FLOOR))
        return log_mel.unsqueeze(1).expand(-1, self.channels, -1, -1)  # (B, C, frames, mels)
