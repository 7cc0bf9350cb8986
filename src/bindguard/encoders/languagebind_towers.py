"""One registry entry per LanguageBind tower: ``--model languagebind-audio --checkpoint LanguageBind_Audio_FT``.

Each builds ``create_languagebind`` with that tower alone (and the text tower of its folder), so a
user who downloaded one tower names it, and ``bindguard models list`` shows what each one needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bindguard.encoders.languagebind import LanguageBind, create_languagebind


def _tower(
    modality: str,
    checkpoint: str | Path | None,
    weights: str | Path | None,
    device: str | torch.device,
    audio_seconds: float,
) -> LanguageBind:
    return create_languagebind(
        checkpoint=checkpoint, weights=weights, device=device, modalities=[modality], audio_seconds=audio_seconds
    )


def create_languagebind_image(
    *, checkpoint: str | Path | None = None, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> LanguageBind:
    """LanguageBind's image tower (and text) from ``LanguageBind_Image`` (or a folder of towers)."""
    return _tower("image", checkpoint, weights, device, 10.0)


def create_languagebind_video(
    *, checkpoint: str | Path | None = None, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> LanguageBind:
    """LanguageBind's video tower (and text) from ``LanguageBind_Video_FT`` (or a folder of towers)."""
    return _tower("video", checkpoint, weights, device, 10.0)


def create_languagebind_audio(
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    audio_seconds: float = 10.0,
) -> LanguageBind:
    """LanguageBind's audio tower (and text) from ``LanguageBind_Audio_FT`` (or a folder of towers)."""
    return _tower("audio", checkpoint, weights, device, audio_seconds)


def create_languagebind_depth(
    *, checkpoint: str | Path | None = None, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> LanguageBind:
    """LanguageBind's depth tower (and text) from ``LanguageBind_Depth`` (or a folder of towers)."""
    return _tower("depth", checkpoint, weights, device, 10.0)


def create_languagebind_thermal(
    *, checkpoint: str | Path | None = None, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> LanguageBind:
    """LanguageBind's thermal tower (and text) from ``LanguageBind_Thermal`` (or a folder of towers)."""
    return _tower("thermal", checkpoint, weights, device, 10.0)
