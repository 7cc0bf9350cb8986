"""The differentiable log-mel front end against an independent NumPy reference."""

from __future__ import annotations

import numpy as np
import torch

from bindguard.encoders.logmel import LogMel, mel_filterbank


def _reference(waveform: np.ndarray, module: LogMel) -> np.ndarray:
    padded = np.pad(waveform, module.n_fft // 2, mode="reflect")
    window = np.zeros(module.n_fft)
    offset = (module.n_fft - module.win_length) // 2
    window[offset : offset + module.win_length] = 0.5 - 0.5 * np.cos(
        2 * np.pi * np.arange(module.win_length) / module.win_length
    )
    frames = [
        padded[start : start + module.n_fft] * window
        for start in range(0, len(padded) - module.n_fft + 1, module.hop_length)
    ]
    power = np.abs(np.fft.rfft(np.stack(frames), axis=1)) ** 2  # (frames, F)
    filters = mel_filterbank(module.n_fft, module.n_mels, module.sample_rate).double().numpy()
    return np.log(power @ filters + 1e-6).T  # (mels, frames)


def test_log_mel_matches_numpy_reference() -> None:
    module = LogMel(sample_rate=16_000)
    waveform = torch.randn(1, 4000) * 0.1
    expected = _reference(waveform[0].double().numpy(), module)
    actual = module(waveform)[0].numpy()
    assert actual.shape == expected.shape == (64, module.frames(4000))
    np.testing.assert_allclose(actual, expected, atol=2e-3, rtol=1e-3)


def test_mel_filters_peak_at_one_and_cover_the_band() -> None:
    filters = mel_filterbank(512, 64, 16_000)
    assert filters.shape == (257, 64)
    assert filters.max() <= 1.0
    # a filter peaks at 1 only where an FFT bin falls on its centre; the narrow low ones fall between bins
    assert (filters.max(0).values > 0.4).all()
    peaks = filters.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all(), "filter centres must rise with the band index"
    assert (filters.sum(1)[3:-3] > 0).all()


def test_gradient_reaches_the_waveform() -> None:
    waveform = (torch.randn(2, 1600) * 0.1).requires_grad_(True)
    LogMel(sample_rate=16_000)(waveform).sum().backward()
    assert waveform.grad is not None and waveform.grad.abs().sum() > 0
