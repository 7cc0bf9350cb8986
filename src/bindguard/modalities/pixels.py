"""Image-like modalities whose raw values are intensities in [0, 1]: image, video, depth, thermal.

Each is a plane of pixels with a channel axis at -3, so a window spans rows and columns (through
every frame of a clip) and the pixel purifier fits all of them.
"""

from __future__ import annotations

from bindguard._types import Modality
from bindguard.modalities.base import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PLANE_AXES = ("C", "H", "W")
CLIP_AXES = ("T", "C", "H", "W")


def image_spec(
    height: int,
    width: int,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> InputSpec:
    """RGB images, (B, 3, H, W), intensities in [0, 1]."""
    return InputSpec(
        Modality.IMAGE,
        "B,3,H,W",
        (3, height, width),
        (0.0, 1.0),
        "intensity",
        mean=mean,
        std=std,
        grid_axes=PLANE_AXES,
        purifier="pixels",
    )


def video_spec(
    frames: int,
    height: int,
    width: int,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> InputSpec:
    """RGB clips, (B, T, 3, H, W), intensities in [0, 1]."""
    return InputSpec(
        Modality.VIDEO,
        "B,T,3,H,W",
        (frames, 3, height, width),
        (0.0, 1.0),
        "intensity",
        mean=mean,
        std=std,
        grid_axes=CLIP_AXES,
        purifier="pixels",
    )


def depth_spec(
    height: int, width: int, *, mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.25,)
) -> InputSpec:
    """Normalised disparity maps, (B, 1, H, W), in [0, 1] (1 = nearest)."""
    return InputSpec(
        Modality.DEPTH,
        "B,1,H,W",
        (1, height, width),
        (0.0, 1.0),
        "normalised disparity",
        mean=mean,
        std=std,
        grid_axes=PLANE_AXES,
        purifier="pixels",
    )


def thermal_spec(
    height: int, width: int, *, mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.25,)
) -> InputSpec:
    """Thermal images, (B, 1, H, W), in [0, 1] (1 = hottest)."""
    return InputSpec(
        Modality.THERMAL,
        "B,1,H,W",
        (1, height, width),
        (0.0, 1.0),
        "normalised temperature",
        mean=mean,
        std=std,
        grid_axes=PLANE_AXES,
        purifier="pixels",
    )
