"""The frozen vision trunk TinyBind shares across image, video frames, depth, thermal and log-mel inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bindguard.encoders.efficientnet_lite import EfficientNetLite0

# Stages 1-5 of EfficientNet-Lite0 (blocks 0-10, 112 channels at stride 16). On 64 px digit
# renders their pooled features separate the classes far better than the final 1280-d layer
# (linear probe: 98% against 77%), and skipping the 1152-wide last stages halves the cost.
TRUNK_BLOCKS = 11
TRUNK_CHANNELS = 112
POOL_GRID = 2  # keep a coarse 2x2 layout: where strokes are matters for digits
TRUNK_DIM = TRUNK_CHANNELS * POOL_GRID * POOL_GRID


class VisionTrunk(nn.Module):
    """Normalised (B, 3, H, W) -> (B, TRUNK_DIM) features from the frozen ImageNet backbone."""

    def __init__(self, backbone: EfficientNetLite0):
        super().__init__()
        self.stem = backbone._conv_stem
        self.stem_norm = backbone._bn0
        self.blocks = nn.ModuleList(list(backbone._blocks)[:TRUNK_BLOCKS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return F.adaptive_avg_pool2d(x, POOL_GRID).flatten(1)  # (B, 448)
