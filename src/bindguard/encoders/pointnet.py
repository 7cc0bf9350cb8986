"""A small PointNet: shared per-point MLP, max pooling, then an MLP to the embedding."""

from __future__ import annotations

import torch
from torch import nn


class PointNet(nn.Module):
    """Permutation-invariant point-cloud encoder.

    Shape:
        input: (B, N, 3) xyz; output: (B, out_dim).
    """

    def __init__(self, out_dim: int, widths: tuple[int, ...] = (64, 128, 256), hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in widths:
            layers += [nn.Conv1d(previous, width, 1), nn.BatchNorm1d(width), nn.ReLU()]
            previous = width
        self.point_mlp = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(previous, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        features = self.point_mlp(points.transpose(1, 2))  # (B, C, N)
        return self.head(features.amax(dim=-1))  # (B, out_dim)
