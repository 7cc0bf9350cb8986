"""ImageBind in plain torch: the official parameter names, differentiable from raw input (see encoder.py)."""

from bindguard.encoders.imagebind.config import HUGE, ImageBindConfig, TowerConfig, tiny
from bindguard.encoders.imagebind.encoder import ImageBind, create_imagebind
from bindguard.encoders.imagebind.model import ImageBindNetwork

__all__ = ["HUGE", "ImageBind", "ImageBindConfig", "ImageBindNetwork", "TowerConfig", "create_imagebind", "tiny"]
