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

    def clip_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Scale each point's displacement back along its own segment until the point is inside the ball.

        Radial projection could grow one coordinate of a displacement (breaking a per-coordinate
        Linf budget); scaling by t in [0, 1] shrinks every coordinate, so any norm budget still
        holds. t solves |x + t d| = radius, which has one root in [0, 1] when x is inside.
        """
        along = (x * delta).sum(-1, keepdim=True)  # (B, N, 1)
        length = delta.square().sum(-1, keepdim=True)
        inside = x.square().sum(-1, keepdim=True)
        outside = inside + 2 * along + length > self.radius**2  # |x + d|^2, without forming x + d
        room = (self.radius**2 - inside).clamp(min=0)
        t = ((along.square() + length * room).sqrt() - along) / length.clamp(min=1e-12)
        scale = torch.where(outside, t.clamp(0, 1) * (1 - 1e-6), 1.0)
        return delta * scale

    def out_of_domain(self, x: torch.Tensor) -> float:
        return float((x.detach().norm(dim=-1) - self.radius).amax().clamp(min=0))


def point_spec(points: int) -> PointSpec:
    """Point clouds, (B, N, 3), every point at most 1 from the origin.

    Points are stored in no particular order, so a black-box window is a random subset of them
    (a contiguous run would carry no locality), and an L2 budget bounds each point's displacement.
    """
    return PointSpec(
        Modality.POINT,
        "B,N,3",
        (points, 3),
        (-1.0, 1.0),
        "coordinates (unit sphere)",
        grid_axes=("W", "C"),
        window="subset",
        per_point_budget=True,
        purifier="points",
    )
