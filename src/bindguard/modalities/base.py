"""The contract of a modality's raw input: layout, units, valid range, projection and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bindguard._types import Modality
from bindguard.errors import ConfigError, InvalidInputError

# Inputs a hair outside the domain (float rounding of a projection) are accepted.
DOMAIN_TOLERANCE = 1e-5
# The window-search grid (B, C, T, H, W): channels, frames, and the two axes a window spans.
GRID_AXES = ("C", "T", "H", "W")
# "contiguous": a rectangle of H x W (a run when H = 1); "subset": any W positions (unordered points).
WINDOWS = ("contiguous", "subset")
# Input-side denoisers a calibration can put in front of the encoder.
PURIFIERS = ("pixels", "waveform", "points")


@dataclass(frozen=True)
class InputSpec:
    """What an encoder expects for one modality, in the raw domain that attacks perturb.

    Attributes:
        modality: the modality.
        layout: axis names, e.g. ``"B,3,H,W"``.
        shape: the shape of one sample (no batch axis).
        domain: the valid value range (low, high); for point clouds the range of each coordinate.
        units: what a value means, e.g. ``"intensity"`` or ``"amplitude"``.
        sample_rate: samples per second, for audio.
        mean, std: per-channel constants of the differentiable normalisation, if any.
        grid_axes: the role in the window-search grid (B, C, T, H, W) of each axis of ``shape``:
            ``"C"`` channels, ``"T"`` frames, ``"H"``/``"W"`` the axes a window spans; an absent
            role has size 1. E.g. ``("C", "H", "W")`` images, ``("T", "C", "H", "W")`` video,
            ``("W",)`` waveforms, ``("W", "C")`` point clouds. None: no grid view.
        window: how a black-box window is shaped on the grid: ``"contiguous"`` (a rectangle, or a
            run when there is no H axis) or ``"subset"`` (any W positions, for unordered inputs).
        per_point_budget: an L2 budget bounds each grid position's channel vector (each point's
            displacement) rather than the whole sample.
        purifier: the input-side denoiser that fits: ``"pixels"`` (channels at axis -3, frames
            one by one), ``"waveform"`` or ``"points"``; None when none fits.
    """

    modality: Modality
    layout: str
    shape: tuple[int, ...]
    domain: tuple[float, float]
    units: str
    sample_rate: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grid_axes: tuple[str, ...] | None = None
    window: str = "contiguous"
    per_point_budget: bool = False
    purifier: str | None = None

    def __post_init__(self) -> None:
        name = self.modality.value
        if self.grid_axes is not None:
            axes = tuple(self.grid_axes)
            object.__setattr__(self, "grid_axes", axes)  # a list would make the frozen spec unhashable
            if len(axes) != len(self.shape) or len(set(axes)) != len(axes) or not set(axes) <= set(GRID_AXES):
                raise ConfigError(
                    f"{name} spec grid_axes must name each of the {len(self.shape)} axes of shape {self.shape} "
                    f"once, from {', '.join(GRID_AXES)}; got {axes}"
                )
            if self.window == "subset" and "H" in axes:
                raise ConfigError(f"{name} spec: a 'subset' window picks W positions and needs no H axis; got {axes}")
        if self.window not in WINDOWS:
            raise ConfigError(f"{name} spec window must be one of {', '.join(WINDOWS)}; got {self.window!r}")
        if self.purifier is not None and self.purifier not in PURIFIERS:
            raise ConfigError(
                f"{name} spec purifier must be one of {', '.join(PURIFIERS)} or None; got {self.purifier!r}"
            )

    @property
    def range(self) -> float:
        """Width of the domain; a relative eps is multiplied by it to get the absolute budget."""
        return self.domain[1] - self.domain[0]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Bring ``x`` back into the domain (differentiable where the input already lies inside)."""
        return x.clamp(*self.domain)

    def clip_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Shrink a perturbation so that ``x + delta`` lies in the domain, never growing any coordinate.

        For a box domain this is clamping, which keeps every norm budget that ``delta`` met.
        """
        return self.project(x + delta) - x

    def out_of_domain(self, x: torch.Tensor) -> float:
        """Largest distance of any value from the domain (0 when inside)."""
        low, high = self.domain
        x = x.detach()
        return float(torch.maximum((low - x).amax(), (x - high).amax()).clamp(min=0))

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """View a raw batch (B, *shape) as the window-search grid (B, C, T, H, W), absent axes of size 1.

        Raises:
            ConfigError: when the spec declares no ``grid_axes``.
        """
        axes = self._grid_axes()
        present = [axis for axis in GRID_AXES if axis in axes]
        grid = x.permute(0, *(1 + axes.index(axis) for axis in present))
        for position, axis in enumerate(GRID_AXES):
            if axis not in axes:
                grid = grid.unsqueeze(1 + position)
        return grid

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_grid``: (B, C, T, H, W) -> a contiguous (B, *shape)."""
        axes = self._grid_axes()
        present = [axis for axis in GRID_AXES if axis in axes]
        for position in reversed(range(len(GRID_AXES))):
            if GRID_AXES[position] not in axes:
                grid = grid.squeeze(1 + position)
        return grid.permute(0, *(1 + present.index(axis) for axis in axes)).contiguous()

    def _grid_axes(self) -> tuple[str, ...]:
        if self.grid_axes is None:
            raise ConfigError(
                f"the {self.modality.value} spec declares no grid_axes, so window attacks cannot view it; "
                "fix: give grid_axes, e.g. ('C', 'H', 'W')"
            )
        return tuple(self.grid_axes)

    def normalize(self, x: torch.Tensor, channel_axis: int = -3) -> torch.Tensor:
        """Differentiable (x - mean) / std along ``channel_axis``; identity without constants."""
        if self.mean is None or self.std is None:
            return x
        view = [1] * x.dim()
        view[channel_axis] = len(self.mean)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(view)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(view)
        return (x - mean) / std

    def validate(self, x: object) -> torch.Tensor:
        """Check a batch against the spec and return it.

        Raises:
            InvalidInputError: for a non-tensor, a wrong shape or dtype, NaN/Inf, or values outside the domain.
        """
        name = self.modality.value
        expected = "(B," + ",".join(str(d) for d in self.shape) + ")"
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"{name} input must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InvalidInputError(
                f"{name} input must be floating point ({self.units}), got dtype {x.dtype}; fix: x.float()"
            )
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise InvalidInputError(f"{name} input must have shape {expected} [{self.layout}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InvalidInputError(f"{name} input is an empty batch; give at least one sample")
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(f"{name} input contains NaN or Inf; clean the data before encoding")
        excess = self.out_of_domain(x)
        if excess > DOMAIN_TOLERANCE:
            low, high = self.domain
            raise InvalidInputError(
                f"{name} input has values outside its domain [{low}, {high}] by up to {excess:.4g}; "
                f"fix: scale it into the domain ({self.units})"
            )
        return x
