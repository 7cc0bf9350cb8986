"""ImageBind's audio front end in torch ops: waveform -> normalised log-mel clips, differentiable.

The same numbers as upstream's pipeline (torchaudio's Kaldi-compatible ``fbank``), without
torchaudio and batched:

- 16 kHz mono waveform; 3 clips of 2 s starting at k * (duration - 2 s) / 3 (k = 0, 1, 2), as
  upstream's sampler places them (a waveform of 2 s or less gives three identical clips of all of it);
- each clip minus its own mean; 25 ms frames every 10 ms (no edge padding: 198 frames per clip);
  per frame: DC removal, pre-emphasis 0.97, a symmetric Hann window, a 512-point power spectrum,
  128 triangular HTK-mel filters from 20 Hz to 8 kHz, log with a floor at float32's eps;
- the (128, frames) spectrogram zero-padded on the right to 204 frames, then (x + 4.268) / 9.138.

Nothing here writes into its input, so an attack's leaf tensor can be passed as is. Bins that are
exactly silent sit at the log floor and get no gradient (as upstream's do).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bindguard.encoders.imagebind.config import MEL_BINS, MEL_FRAMES

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQUENCY = 20.0  # Hz; the high edge is the Nyquist frequency
LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi's floor, float32's eps whatever the dtype
CLIP_SAMPLES = 2 * SAMPLE_RATE
CLIPS = 3
FBANK_MEAN, FBANK_STD = -4.268, 9.138  # ImageBind's spectrogram normalisation


def mel_scale(frequency: torch.Tensor) -> torch.Tensor:
    """HTK mel: 1127 ln(1 + f / 700)."""
    return 1127.0 * (1.0 + frequency / 700.0).log()


def mel_filterbank(
    mel_bins: int = MEL_BINS, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """(mel_bins, FFT_SIZE // 2 + 1) triangular filters, equally spaced in mel; the Nyquist bin gets no weight.

    Computed in float32 as Kaldi's reference does (in float64 the filters move by up to 1e-4 in the
    log domain), then cast to ``dtype``.
    """
    low = 1127.0 * math.log(1.0 + LOW_FREQUENCY / 700.0)
    high = 1127.0 * math.log(1.0 + (SAMPLE_RATE / 2) / 700.0)
    step = (high - low) / (mel_bins + 1)
    index = torch.arange(mel_bins, dtype=torch.float32)[:, None]
    left, centre, right = low + index * step, low + (index + 1.0) * step, low + (index + 2.0) * step
    # Kaldi weighs the FFT bins 0 .. N/2 - 1 and leaves the Nyquist bin out
    mel = mel_scale((SAMPLE_RATE / FFT_SIZE) * torch.arange(FFT_SIZE // 2, dtype=torch.float32))[None, :]
    rising, falling = (mel - left) / (centre - left), (right - mel) / (right - centre)
    filters = torch.minimum(rising, falling).clamp(min=0)  # (mel_bins, 256)
    return F.pad(filters, (0, 1)).to(dtype=dtype, device=device)  # (mel_bins, 257)


def log_mel_fbank(waveform: torch.Tensor, mel_bins: int = MEL_BINS) -> torch.Tensor:
    """Kaldi-style log-mel filterbank energies of 16 kHz waveforms.

    Shape:
        waveform: (B, S) with S >= 400. Returns (B, frames, mel_bins), frames = 1 + (S - 400) // 160.
    """
    frames = waveform.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # (B, F, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)  # DC removal
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # the first sample is its own predecessor
    frames = frames - PREEMPHASIS * previous
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=waveform.dtype, device=waveform.device)
    spectrum = torch.fft.rfft(frames * window, n=FFT_SIZE)  # (B, F, 257), zero-padded to 512
    power = spectrum.real.square() + spectrum.imag.square()  # |X|^2 without abs's undefined gradient at 0
    filters = mel_filterbank(mel_bins, dtype=waveform.dtype, device=waveform.device)
    return (power @ filters.T).clamp(min=LOG_FLOOR).log()  # (B, F, mel_bins)


def clip_starts(samples: int) -> list[int]:
    """First sample of each of the 3 clips, as upstream's clip sampler places them.

    Clip k starts at k * (duration - 2 s) / 3 seconds (k = 0, 1, 2), rounded down to a sample:
    for 2.5 s that is samples 0, 2666 and 5333 (measured on the upstream code, see
    tests/fixtures/README.md). The last clip does not reach the end of the waveform. A waveform
    of 2 s or less has all three at 0.
    """
    seconds = max(samples - CLIP_SAMPLES, 0) / SAMPLE_RATE
    return [int(k * seconds / CLIPS * SAMPLE_RATE) for k in range(CLIPS)]


def clip_spectrograms(waveform: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Normalised log-mel inputs of the audio tower, one per clip.

    Shape:
        waveform: (B, S) 16 kHz samples. Returns (B, len(starts), 1, 128, 204).
    """
    length = min(waveform.shape[-1], CLIP_SAMPLES)
    clips = torch.stack([waveform[:, start : start + length] for start in starts], dim=1)  # (B, C, L)
    clips = clips - clips.mean(dim=-1, keepdim=True)
    spectrogram = log_mel_fbank(clips.flatten(0, 1)).transpose(1, 2)  # (B*C, 128, frames)
    spectrogram = F.pad(spectrogram, (0, MEL_FRAMES - spectrogram.shape[-1]))  # zeros on the right, as upstream
    spectrogram = (spectrogram - FBANK_MEAN) / FBANK_STD
    return spectrogram.view(waveform.shape[0], len(starts), 1, MEL_BINS, MEL_FRAMES)
