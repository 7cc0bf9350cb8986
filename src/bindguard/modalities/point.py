"""Point clouds: xyz coordinates, centred, inside the unit sphere."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bindguard._types import Modality
from bindguard.modalities.base import InputSpec


@dataclass(frozen=True)
class PointSpec(InputSpec):
    """(B, N, 3) xyz; the domain is the unit ball, so ``project`` rescales points that leave it."""

    radius: float = 1.0

    def project(self, x: torch.Tensor) -> torch.Tensor:
        norms = x.norm(dim=-1, keepdim=True)  # (B, N, 1)
        return x * (self.radius / norms.clamp(min=self.radius))

    def out_of_domain(self, x: torch.Tensor) -> float:
        return float((x.norm(dim=-1) - self.radius).amax().clamp(min=0))


def point_spec(points: int) -> PointSpec:
    """Point clouds, (B, N, 3), every point at most 1 from the origin."""
    return PointSpec(Modality.POINT, "B,N,3", (points, 3), (-1.0, 1.0), "coordinates (unit sphere)")
