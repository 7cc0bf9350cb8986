"""Input-side purifiers: a small trainable module in front of the frozen encoder.

Each is residual, x -> project(x + g(x)), with g's last layer zero at initialisation (the
calibrated model starts as the original). Trained adversarially, g can learn to undo or smooth
away small perturbations before the fragile encoder sees them; unlike a post-encoder head, that
can change how much the encoder's output moves with the input.

With ``noise`` > 0 the purifier first adds Gaussian noise of that standard deviation (relative
to the domain's range) on every call: randomized smoothing, evaluated with EOT and certifiable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bindguard.errors import ConfigError

# The kinds an ``InputSpec.purifier`` may declare (modalities/base.py: PURIFIERS); calibration sits
# beside modalities in the layers, so the spec's choice arrives as this plain string.
PURIFIER_KINDS = ("pixels", "waveform", "points")


def _zero_last(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class ImagePurifier(nn.Module):
    """(B, C, H, W) residual convolutional denoiser; video frames go through it one by one."""

    def __init__(self, channels: int, width: int = 16, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        previous = channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.GELU()]
            previous = width
        last = nn.Conv2d(previous, channels, 3, padding=1)
        _zero_last(last)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # (B, T, C, H, W)
            return self.forward(x.flatten(0, 1)).view_as(x)
        return x + self.residual(x)


class WaveformPurifier(nn.Module):
    """(B, S) residual 1-D convolutional denoiser on the waveform."""

    def __init__(self, width: int = 16, depth: int = 3, kernel: int = 9):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for _ in range(depth - 1):
            layers += [nn.Conv1d(previous, width, kernel, padding=kernel // 2), nn.GELU()]
            previous = width
        last = nn.Conv1d(previous, 1, kernel, padding=kernel // 2)
        _zero_last(last)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x.unsqueeze(1)).squeeze(1)


class SpectralGate(nn.Module):
    """(B, S) learned spectral soft-threshold: STFT, shrink every magnitude by a per-frequency
    threshold (zero below it), inverse STFT.

    Magnitudes are in the units of a sinusoid's amplitude (the windowed DFT divided by half the
    window's sum), so a threshold reads as an amplitude. A Linf perturbation of size eps has at
    most 2 eps in any bin of any frame: a gate that learns thresholds near that removes whatever
    an attacker adds to the quiet bins, where a log spectrogram is most sensitive, while strong
    components pass shifted by at most 2 eps. Thresholds start at zero: the identity, up to the
    float rounding of the STFT round trip, unless ``initial`` > 0 starts every threshold there
    (a gate at twice the training eps passes nothing of a perturbation alone: silence stays silent).
    The kink at each threshold is differentiable almost everywhere, so the gate is attacked end to
    end like the rest of the model (no BPDA needed).
    """

    def __init__(self, n_fft: int = 512, hop: int = 128, initial: float = 0.0):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.threshold = nn.Parameter(torch.full((n_fft // 2 + 1,), float(initial)))
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True
        )  # (B, F, frames)
        unit = self.window.sum() / 2  # a unit-amplitude sinusoid's peak magnitude
        magnitude = (spectrum.real.square() + spectrum.imag.square() + 1e-20).sqrt() / unit
        kept = torch.relu(magnitude - self.threshold.clamp_min(0)[:, None]) / magnitude
        return torch.istft(spectrum * kept, self.n_fft, self.hop, window=self.window, center=True, length=x.shape[-1])


class PointPurifier(nn.Module):
    """(B, N, 3) per-point displacement from the point and a max-pooled summary of the cloud.

    With ``neighbours`` k > 0 it also sees each point's offset to the mean of its k nearest
    neighbours and can move the point along it by a learned fraction (Laplacian smoothing): an
    attacker's independent per-point shifts average out over a neighbourhood. Choosing the
    neighbours (a top-k) is piecewise constant in the input, so the gradient through the gathered
    coordinates is exact almost everywhere, as through PointNet's own max pooling: attacks
    differentiate it directly.
    """

    def __init__(self, width: int = 64, neighbours: int = 0):
        super().__init__()
        self.neighbours = neighbours
        extra = 3 if neighbours else 0
        self.local = nn.Sequential(nn.Linear(3 + extra, width), nn.GELU(), nn.Linear(width, width))
        last = nn.Linear(width, 3)
        _zero_last(last)
        self.displacement = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), last)
        self.smoothing = nn.Parameter(torch.zeros(())) if neighbours else None

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features, moved = points, points
        if self.neighbours:
            offset = _neighbourhood_mean(points, self.neighbours) - points  # (B, N, 3)
            features = torch.cat([points, offset], -1)
            moved = points + self.smoothing * offset
        local = self.local(features)  # (B, N, W)
        summary = local.amax(1, keepdim=True).expand_as(local)
        return moved + self.displacement(torch.cat([local, summary], -1))


def _neighbourhood_mean(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, 3) mean of each point's k nearest neighbours (itself included)."""
    k = min(k, points.shape[1])
    with torch.no_grad():
        index = torch.cdist(points, points).topk(k, dim=-1, largest=False).indices  # (B, N, k)
    gathered = torch.gather(
        points.unsqueeze(1).expand(-1, points.shape[1], -1, -1), 2, index.unsqueeze(-1).expand(-1, -1, -1, 3)
    )
    return gathered.mean(2)


def _create_denoiser(
    kind: str, shape: tuple[int, ...], width: int, spectral: bool = False, neighbours: int = 0, gate: float = 0.0
) -> nn.Module:
    """The denoiser of ``kind`` for per-sample ``shape``, checked against the shape it needs."""
    if kind == "points" and len(shape) == 2 and shape[-1] == 3:
        return PointPurifier(width=max(width, 32), neighbours=neighbours)
    if kind == "waveform" and len(shape) == 1:
        if spectral:  # the convolution first (it can only smooth), then the gate
            gate_module = SpectralGate(n_fft=min(512, _power_of_two(shape[0])), initial=gate)
            return nn.Sequential(WaveformPurifier(width=width), gate_module)
        return WaveformPurifier(width=width)
    if kind == "pixels" and len(shape) in (3, 4):  # (C, H, W) images, (T, C, H, W) videos
        return ImagePurifier(shape[-3], width=width)
    needs = {"points": "(N, 3)", "waveform": "(S,)", "pixels": "(C, H, W) or (T, C, H, W)"}
    if kind not in needs:
        raise ConfigError(f"unknown purifier kind {kind!r}; allowed: {', '.join(PURIFIER_KINDS)}")
    raise ConfigError(f"a {kind!r} purifier needs inputs of shape {needs[kind]} per sample, got {shape}")


def _power_of_two(samples: int) -> int:
    return 1 << max(3, (samples // 4).bit_length() - 1)


class Purifier(nn.Module):
    """Optional smoothing noise, the modality's denoiser, then projection back into the domain.

    Args:
        kind: which denoiser, as the modality's spec declares it (``InputSpec.purifier``):
            ``"pixels"``, ``"waveform"`` or ``"points"``.
        shape: the per-sample input shape (``InputSpec.shape``), which sizes the denoiser.
        domain: (low, high) of the raw input, for the noise scale (and the default projection).
        project: brings a denoised batch back into the domain (``InputSpec.project``); default:
            clamp into [low, high].
        width: channels of the denoiser.
        noise: Gaussian noise std relative to the domain's range (0: deterministic).
        spectral: waveforms only: add a learned spectral gate (``SpectralGate``) after the convolution.
        neighbours: points only: k of the nearest-neighbour smoothing (``PointPurifier``); 0: none.
        gate: the spectral gate's initial threshold, in the waveform's units (0: the identity).

    Raises:
        ConfigError: for an unknown kind, or a shape the kind's denoiser cannot take.
    """

    def __init__(
        self,
        kind: str,
        shape: tuple[int, ...],
        domain: tuple[float, float],
        *,
        project: Callable[[torch.Tensor], torch.Tensor] | None = None,
        width: int = 16,
        noise: float = 0.0,
        spectral: bool = False,
        neighbours: int = 0,
        gate: float = 0.0,
    ):
        super().__init__()
        if spectral and kind != "waveform":
            raise ConfigError(f"the spectral gate is for waveforms; the {kind!r} purifier has none (drop 'spectral')")
        if neighbours and kind != "points":
            raise ConfigError(f"neighbour smoothing is for point clouds; the {kind!r} purifier has none")
        self.kind, self.noise = kind, float(noise)
        self.low, self.high = float(domain[0]), float(domain[1])
        self.project = project if project is not None else self._clamp
        self.denoiser = _create_denoiser(kind, tuple(shape), width, spectral, neighbours, gate)

    @property
    def randomized(self) -> bool:
        return self.noise > 0

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise > 0:
            x = x + torch.randn_like(x) * (self.noise * (self.high - self.low))
        return self.project(self.denoiser(x))
