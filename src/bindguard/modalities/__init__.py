"""Per-modality input contracts: layout, units, valid range, projection, normalisation."""

from bindguard.modalities.audio import audio_spec
from bindguard.modalities.base import InputSpec
from bindguard.modalities.event import event_spec, events_to_tensor
from bindguard.modalities.pixels import depth_spec, image_spec, thermal_spec, video_spec
from bindguard.modalities.point import PointSpec, point_spec

__all__ = [
    "InputSpec",
    "PointSpec",
    "audio_spec",
    "depth_spec",
    "event_spec",
    "events_to_tensor",
    "image_spec",
    "point_spec",
    "thermal_spec",
    "video_spec",
]
