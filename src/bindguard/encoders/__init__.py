"""Encoders: one interface from raw input to embedding; the built-in TinyBind and adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bindguard.encoders.base import Encoder
from bindguard.encoders.device import resolve_device
from bindguard.registry import Registry

ENCODERS: Registry[Encoder] = Registry("encoder", "bindguard models list")
ENCODERS.register(
    "tinybind",
    "bindguard.encoders.tinybind:create_tinybind",
    description="embedded default: MiniLM text + EfficientNet-Lite0 trunk, 6 modalities, CPU, offline",
    extra="tinybind",
)
ENCODERS.register(
    "imagebind-huge",
    "bindguard.encoders.imagebind:create_imagebind",
    description="ImageBind huge in plain torch: image, video, audio, depth, thermal, text; "
    "--checkpoint imagebind_huge.pth (weights CC-BY-NC-SA 4.0)",
)
ENCODERS.register(
    "languagebind",
    "bindguard.encoders.languagebind:create_languagebind",
    description="LanguageBind (image, video, audio, depth, thermal + text) from its Hugging Face tower folders; "
    "--checkpoint DIR",
    extra="languagebind",
)
for _tower, _folder in (
    ("image", "LanguageBind_Image"),
    ("video", "LanguageBind_Video_FT"),
    ("audio", "LanguageBind_Audio_FT"),
    ("depth", "LanguageBind_Depth"),
    ("thermal", "LanguageBind_Thermal"),
):
    ENCODERS.register(
        f"languagebind-{_tower}",
        f"bindguard.encoders.languagebind_towers:create_languagebind_{_tower}",
        description=f"LanguageBind's {_tower} tower + text; --checkpoint {_folder} (or a folder of towers)",
        extra="languagebind",
    )
ENCODERS.register(
    "clip",
    "bindguard.encoders.clip:create_clip",
    description="CLIP (transformers CLIPModel) from a Hugging Face folder: image + text; --checkpoint DIR",
    extra="clip",
)
ENCODERS.register(
    "open-clip",
    "bindguard.encoders.open_clip:create_open_clip",
    description="open_clip ViT checkpoint file as CLIP (keys converted, CLIP's BPE): image + text; --checkpoint FILE",
    extra="clip",
)
ENCODERS.register(
    "clap",
    "bindguard.encoders.clap:create_clap",
    description="CLAP (transformers ClapModel) from a Hugging Face folder: 48 kHz audio + text; --checkpoint DIR",
    extra="clap",
)


def create_encoder(name: str, /, *, calibration: str | Path | None = None, **options: Any) -> Encoder:
    """Build a registered encoder by name, e.g. ``create_encoder("tinybind")``.

    Args:
        name: registry id (``bindguard models list``).
        calibration: a folder written by ``bindguard calibrate``; the encoder is returned with it applied.
        options: passed to the encoder's factory (e.g. ``weights``, ``device``).
    """
    if "device" in options:
        options["device"] = resolve_device(options["device"])
    encoder = ENCODERS.create(name, **options)
    if calibration is None:
        return encoder
    from bindguard.encoders.calibrated import calibrate_encoder

    return calibrate_encoder(encoder, calibration)


def list_encoders(pattern: str = "*") -> list[str]:
    return ENCODERS.names(pattern)


__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
