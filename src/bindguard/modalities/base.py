"""The contract of a modality's raw input: layout, units, valid range, projection and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bindguard._types import Modality
from bindguard.errors import InvalidInputError

# Inputs a hair outside the domain (float rounding of a projection) are accepted.
DOMAIN_TOLERANCE = 1e-5


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
    """

    modality: Modality
    layout: str
    shape: tuple[int, ...]
    domain: tuple[float, float]
    units: str
    sample_rate: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

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
