"""LanguageBind's audio front end in batched, differentiable torch: Kaldi filter banks, then a fixed-size mel image.

``fbank`` computes what Kaldi's ``compute-fbank-feats`` (and ``torchaudio.compliance.kaldi.fbank``)
gives with the settings LanguageBind and ImageBind use: 25 ms frames every 10 ms with the edges
snipped, per-frame DC removal, pre-emphasis 0.97, a non-periodic Hann window, a 512-point FFT
power spectrum, triangular filters on the HTK mel scale (``1127 ln(1 + f/700)``) from 20 Hz to
Nyquist, and the log clamped at the float32 epsilon. No dither, no energy column. It runs on a
whole batch at once and every step is differentiable, so attacks reach the waveform.

``mel_image`` turns those frames into the (3, bins, target_length) input of LanguageBind's audio
tower. Upstream draws three random chunks when a clip is longer than ``target_length`` frames;
here the chunk starts are fixed (``chunk_starts``), so one waveform always gets one embedding.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

FRAME_MS, HOP_MS = 25, 10
PREEMPHASIS = 0.97
LOW_HZ = 20.0
# Kaldi's log floor: the float32 machine epsilon (exactly silent bins get this value and no gradient)
LOG_FLOOR = torch.finfo(torch.float32).eps


def frame_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(window, hop, FFT size) in samples: 25 ms, 10 ms, and the window rounded up to a power of two."""
    window = int(sample_rate * FRAME_MS / 1000)
    return window, int(sample_rate * HOP_MS / 1000), 1 << (window - 1).bit_length()


def num_frames(samples: int, sample_rate: int = 16_000) -> int:
    """How many frames ``fbank`` gives for a clip of ``samples`` (0 when it is shorter than one window)."""
    window, hop, _ = frame_sizes(sample_rate)
    return 0 if samples < window else 1 + (samples - window) // hop


def _mel(frequency: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + frequency / 700.0).log()


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, num_mel_bins: int, fft_size: int) -> torch.Tensor:
    """(bins, fft_size // 2 + 1) triangular filters, flat on the mel scale.

    Filter i rises from mel point i to i + 1 and falls to i + 2, the ``bins + 2`` points evenly
    spaced between 20 Hz and Nyquist; the Nyquist FFT bin gets no weight, as in Kaldi. Computed in
    float32 in Kaldi's order of operations: with 112 bins the lowest filters hold one FFT bin each,
    so float64 filters would move their log energies by up to 1e-4.
    """
    low, high = (1127.0 * math.log1p(hz / 700.0) for hz in (LOW_HZ, sample_rate / 2))
    points = torch.arange(num_mel_bins + 2, dtype=torch.float32) * ((high - low) / (num_mel_bins + 1)) + low
    left, center, right = points[:-2, None], points[1:-1, None], points[2:, None]  # (bins, 1)
    fft_mel = _mel((sample_rate / fft_size) * torch.arange(fft_size // 2, dtype=torch.float32))[None]  # (1, F/2)
    rising, falling = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)
    filters = torch.minimum(rising, falling).clamp(min=0)  # (bins, F/2)
    return F.pad(filters, (0, 1))  # (bins, F/2 + 1)


def fbank(waveform: torch.Tensor, *, sample_rate: int = 16_000, num_mel_bins: int) -> torch.Tensor:
    """Kaldi log-mel filter banks of a batch of mono waveforms.

    Args:
        waveform: amplitudes (float32 in [-1, 1] as ``torchaudio.load`` gives them).
        sample_rate: samples per second.
        num_mel_bins: filters (LanguageBind: 112, ImageBind: 128).

    Returns:
        Log filter-bank energies, differentiable with respect to ``waveform``.

    Shape:
        waveform (B, samples) -> (B, frames, num_mel_bins), frames = 1 + (samples - window) // hop.

    Raises:
        ValueError: for a clip shorter than one 25 ms window.
    """
    window, hop, fft_size = frame_sizes(sample_rate)
    if waveform.shape[-1] < window:
        raise ValueError(f"fbank needs at least {window} samples (one 25 ms frame), got {waveform.shape[-1]}")
    frames = waveform.unfold(-1, window, hop)  # (B, T, window)
    frames = frames - frames.mean(-1, keepdim=True)  # DC removal per frame
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # the first sample is its own predecessor
    frames = frames - PREEMPHASIS * previous
    hann = torch.hann_window(window, periodic=False, dtype=frames.dtype, device=frames.device)
    spectrum = torch.fft.rfft(frames * hann, n=fft_size)  # (B, T, fft_size // 2 + 1)
    power = spectrum.real.square() + spectrum.imag.square()  # |X|^2 without abs(): smooth at 0
    filters = mel_filters(sample_rate, num_mel_bins, fft_size).to(dtype=power.dtype, device=power.device)
    return (power @ filters.T).clamp(min=LOG_FLOOR).log()  # (B, T, bins)


def chunk_starts(frames: int, target_length: int) -> tuple[int, int, int]:
    """The first frames of the three chunks a clip of ``frames`` > ``target_length`` frames is cut into.

    Upstream splits the valid starts ``0 .. frames - target_length`` into three consecutive
    thirds (``numpy.array_split``) and draws one start at random from each (an empty third gives
    0). The rule here takes the middle of each third instead: the expected start of each random
    draw, evenly spaced, and the same on every call.
    """
    starts = frames - target_length + 1
    size, extra = divmod(starts, 3)
    chosen, first = [], 0
    for part in range(3):
        length = size + (1 if part < extra else 0)
        chosen.append(first + (length - 1) // 2 if length else 0)
        first += length
    return chosen[0], chosen[1], chosen[2]


def mel_image(mel: torch.Tensor, target_length: int) -> torch.Tensor:
    """LanguageBind's three-channel mel image of a batch of filter-bank frames.

    Longer than ``target_length`` frames: three chunks at ``chunk_starts`` (front, middle, back);
    shorter: the frames tiled end to end and cut at ``target_length``, in all three channels;
    exactly ``target_length``: the frames in all three channels.

    Shape:
        mel (B, frames, bins) -> (B, 3, bins, target_length)
    """
    frames = mel.shape[1]
    if frames > target_length:
        chunks = [mel[:, start : start + target_length] for start in chunk_starts(frames, target_length)]
    else:
        tiled = mel.repeat(1, math.ceil(target_length / frames), 1)[:, :target_length]  # (B, target, bins)
        chunks = [tiled] * 3
    return torch.stack(chunks, dim=1).transpose(2, 3)  # (B, 3, bins, target)
