"""Low-rank adapters (LoRA) for chosen weights inside a frozen encoder.

The adapter never touches the original weights: it yields replacement tensors W + (alpha / r) B A
that the calibrated encoder passes to ``torch.func.functional_call``, so removing the adapter is
dropping it. B starts at zero, so the adapted encoder equals the original at initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _key(name: str) -> str:
    return name.replace(".", "/")  # parameter names may not contain dots


class LowRankAdapter(nn.Module):
    """Rank-``rank`` updates of 2-D weights (linear layers, 1x1 convolutions), by parameter name,
    plus zero-initialised additive updates of the small tensors (biases, which hold the folded
    BatchNorm shifts, and depthwise kernels), which cost few parameters and steer a lot.

    Args:
        targets: ``{parameter name: weight shape}`` in the frozen encoder, e.g.
            ``{"trunk.blocks.0._project_conv.weight": (16, 32, 1, 1)}``.
        rank: the rank r of each update.
        alpha: scale numerator; the update is multiplied by alpha / r.
        small: ``{parameter name: shape}`` of tensors updated in full.
    """

    def __init__(
        self,
        targets: dict[str, tuple[int, ...]],
        rank: int = 4,
        alpha: float | None = None,
        small: dict[str, tuple[int, ...]] | None = None,
    ):
        super().__init__()
        self.small = {name: tuple(shape) for name, shape in (small or {}).items()}
        self.shifts = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(shape)) for n, shape in self.small.items()})
        self.targets = {name: tuple(shape) for name, shape in targets.items()}
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        for name, shape in self.targets.items():
            out_features, in_features = shape[0], math.prod(shape[1:])
            down = torch.empty(rank, in_features)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            self.down[_key(name)] = nn.Parameter(down)
            self.up[_key(name)] = nn.Parameter(torch.zeros(out_features, rank))

    def overrides(self, originals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapted weights for ``functional_call``: ``{name: original + scale * up @ down}``."""
        adapted = {}
        for name, shape in self.targets.items():
            key = _key(name)
            delta = (self.up[key] @ self.down[key]).view(shape) * self.scale
            adapted[name] = originals[name] + delta
        for name in self.small:
            adapted[name] = originals[name] + self.shifts[_key(name)]
        return adapted


class FullOverride(nn.Module):
    """Every listed parameter as a trainable copy: full fine-tuning of a tower, the costly baseline."""

    def __init__(self, originals: dict[str, torch.Tensor]):
        super().__init__()
        self.names = list(originals)
        self.weights = nn.ParameterDict(
            {_key(n): nn.Parameter(t.detach().clone().contiguous()) for n, t in originals.items()}
        )

    def overrides(self, originals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.weights[_key(name)] for name in self.names}
