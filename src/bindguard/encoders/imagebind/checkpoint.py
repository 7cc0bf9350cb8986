"""Reading ImageBind weights: tensors only, every key accounted for, or a one-line error.

A checkpoint is a plain state dict, either ``torch.save``'d (read with ``weights_only=True``, so
nothing but tensors is ever unpickled, and memory-mapped) or a ``.safetensors`` file. Wrappers
that hold ImageBind as ``backbone.bind`` (UniBind, Point-Bind) are accepted: the keys under that
prefix are ImageBind's, and the wrapper's own keys are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from bindguard.encoders.base import non_finite_tensor
from bindguard.encoders.checkpoints import check_keys, read_state_dict
from bindguard.errors import DataError

PUBLISHED_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
WRAPPER_PREFIX = "backbone.bind."


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth``/``.pt``/``.safetensors`` state dict (or a folder holding one), with any
    wrapper prefix removed (``encoders.checkpoints.read_state_dict``: tensors only, memory-mapped).

    Raises:
        DataError: for a missing or unreadable file, one that holds more than tensors, or no tensors.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"ImageBind checkpoint not found at {path}; give the path of imagebind_huge.pth ({PUBLISHED_URL})"
        )
    state = read_state_dict(path, strip_prefixes=())
    if not state:
        raise DataError(f"ImageBind checkpoint {path} holds no tensors; give the model's state_dict() itself")
    return strip_wrapper_prefix(state)


def strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ImageBind's keys of a wrapper's state dict (those under ``backbone.bind.``), or ``state`` unchanged."""
    if not any(name.startswith(WRAPPER_PREFIX) for name in state):
        return state
    return {name[len(WRAPPER_PREFIX) :]: tensor for name, tensor in state.items() if name.startswith(WRAPPER_PREFIX)}


def check_fit(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    *,
    source: str,
    constants: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Refuse any missing key, unexpected key, wrong shape or non-finite value, in one line naming the first of each.

    ``constants`` are tensors the checkpoint stores but the architecture fixes (the text tower's
    causal mask, whose -inf entries are by design): they must hold exactly these values.

    Raises:
        DataError: when ``found`` is not exactly the state ``expected`` describes.
    """
    check_keys(expected, found, source)
    constants = constants or {}
    for name, value in constants.items():
        if not torch.equal(found[name].to(value.dtype), value):
            raise DataError(f"{source}: {name!r} is not the fixed value the architecture needs; nothing was loaded")
    broken = non_finite_tensor({name: tensor for name, tensor in found.items() if name not in constants})
    if broken is not None:
        raise DataError(f"{source}: tensor {broken!r} holds NaN or infinite values; nothing was loaded")
