"""Where an encoder runs: a device name checked against what torch sees."""

from __future__ import annotations

import torch

from bindguard.errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``: CUDA when available, else the CPU; otherwise the named device, checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from error
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device; fix: --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s); "
            "fix: --device cuda:0"
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no MPS device; fix: --device cpu")
    return resolved
