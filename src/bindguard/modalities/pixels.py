"""Image-like modalities whose raw values are intensities in [0, 1]: image, video, depth, thermal."""

from __future__ import annotations

from bindguard._types import Modality
from bindguard.modalities.base import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_spec(height: int, width: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> InputSpec:
    """RGB images, (B, 3, H, W), intensities in [0, 1]."""
    return InputSpec(Modality.IMAGE, "B,3,H,W", (3, height, width), (0.0, 1.0), "intensity", mean=mean, std=std)


def video_spec(frames: int, height: int, width: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> InputSpec:
    """RGB clips, (B, T, 3, H, W), intensities in [0, 1]."""
    return InputSpec(
        Modality.VIDEO, "B,T,3,H,W", (frames, 3, height, width), (0.0, 1.0), "intensity", mean=mean, std=std
    )


def depth_spec(height: int, width: int, *, mean=(0.5,), std=(0.25,)) -> InputSpec:
    """Normalised disparity maps, (B, 1, H, W), in [0, 1] (1 = nearest)."""
    return InputSpec(
        Modality.DEPTH, "B,1,H,W", (1, height, width), (0.0, 1.0), "normalised disparity", mean=mean, std=std
    )


def thermal_spec(height: int, width: int, *, mean=(0.5,), std=(0.25,)) -> InputSpec:
    """Thermal images, (B, 1, H, W), in [0, 1] (1 = hottest)."""
    return InputSpec(
        Modality.THERMAL, "B,1,H,W", (1, height, width), (0.0, 1.0), "normalised temperature", mean=mean, std=std
    )
