"""Encoders: one interface from raw input to embedding; the built-in TinyBind and adapters."""

from __future__ import annotations

from typing import Any

from bindguard.encoders.base import Encoder
from bindguard.registry import Registry

ENCODERS: Registry[Encoder] = Registry("encoder", "bindguard models list")
ENCODERS.register(
    "tinybind",
    "bindguard.encoders.tinybind:create_tinybind",
    description="embedded default: MiniLM text + EfficientNet-Lite0 trunk, 6 modalities, CPU, offline",
    extra="tinybind",
)


def create_encoder(name: str, /, **options: Any) -> Encoder:
    """Build a registered encoder by name, e.g. ``create_encoder("tinybind")``."""
    return ENCODERS.create(name, **options)


def list_encoders(pattern: str = "*") -> list[str]:
    return ENCODERS.names(pattern)


__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
