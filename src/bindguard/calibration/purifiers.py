"""Input-side purifiers: a small trainable module in front of the frozen encoder.

Each is residual, x -> project(x + g(x)), with g's last layer zero at initialisation (the
calibrated model starts as the original). Trained adversarially, g can learn to undo or smooth
away small perturbations before the fragile encoder sees them; unlike a post-encoder head, that
can change how much the encoder's output moves with the input.

With ``noise`` > 0 the purifier first adds Gaussian noise of that standard deviation (relative
to the domain's range) on every call: randomized smoothing, evaluated with EOT and certifiable.
"""

from __future__ import annotations

import torch
from torch import nn

from bindguard.errors import ConfigError


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


class PointPurifier(nn.Module):
    """(B, N, 3) per-point displacement from the point and a max-pooled summary of the cloud."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(3, width), nn.GELU(), nn.Linear(width, width))
        last = nn.Linear(width, 3)
        _zero_last(last)
        self.displacement = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), last)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        local = self.local(points)  # (B, N, W)
        summary = local.amax(1, keepdim=True).expand_as(local)
        return points + self.displacement(torch.cat([local, summary], -1))


class Purifier(nn.Module):
    """Optional smoothing noise, the modality's denoiser, then projection back into the domain.

    Args:
        layout, shape: the modality's input layout and per-sample shape (``InputSpec``), which
            pick the denoiser.
        domain: (low, high) of the raw input, for the projection and the noise scale.
        width: channels of the denoiser.
        noise: Gaussian noise std relative to the domain's range (0: deterministic).
    """

    def __init__(
        self, layout: str, shape: tuple[int, ...], domain: tuple[float, float], *, width: int = 16, noise: float = 0.0
    ):
        super().__init__()
        self.layout, self.noise = layout, float(noise)
        self.low, self.high = float(domain[0]), float(domain[1])
        if layout == "B,N,3":
            self.denoiser: nn.Module = PointPurifier(width=max(width, 32))
        elif len(shape) == 1:
            self.denoiser = WaveformPurifier(width=width)
        elif len(shape) in (3, 4):  # (C, H, W) images, (T, C, H, W) videos
            self.denoiser = ImagePurifier(shape[-3], width=width)
        else:
            raise ConfigError(f"no purifier for input layout {layout!r}; use --method head or lora")

    @property
    def randomized(self) -> bool:
        return self.noise > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise > 0:
            x = x + torch.randn_like(x) * (self.noise * (self.high - self.low))
        x = self.denoiser(x)
        if self.layout == "B,N,3":
            return x * (1.0 / x.norm(dim=-1, keepdim=True).clamp(min=1.0))
        return x.clamp(self.low, self.high)
