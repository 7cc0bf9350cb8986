"""Post-encoder projection heads (the paper's calibration): embedding in, embedding out, identity at init."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """z -> W z + b with W = I and b = 0 at initialisation, so the calibrated model starts as the original.

    UniBind fine-tunes exactly such a per-modality ``nn.Linear(D, D)`` on a frozen backbone.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)


class ResidualHead(nn.Module):
    """z -> z + W2 GELU(W1 z + b1) + b2, with W2 and b2 zero at initialisation (identity at step 0)."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.inner = nn.Linear(dim, hidden)
        self.outer = nn.Linear(hidden, dim)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding + self.outer(nn.functional.gelu(self.inner(embedding)))
