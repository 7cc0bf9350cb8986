"""The modality vocabulary shared by every layer."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from enum import Enum

import torch

from bindguard.errors import ConfigError, UnknownNameError


class Modality(str, Enum):
    """A modality of a unified encoder; the value is its canonical key."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    POINT = "point"
    DEPTH = "depth"
    THERMAL = "thermal"
    EVENT = "event"
    TEXT = "text"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, name: str | Modality) -> Modality:
        """Turn a canonical key or alias (``vision``, ``language``, ``point_cloud``...) into a Modality.

        Raises:
            UnknownNameError: for a name that is neither a key nor an alias.
        """
        if isinstance(name, Modality):
            return name
        key = str(name).strip().lower().replace("-", "_")
        if key in _BY_NAME:
            return _BY_NAME[key]
        allowed = ", ".join(m.value for m in cls)
        close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
        hint = f"did you mean {_BY_NAME[close[0]].value!r}? " if close else ""
        raise UnknownNameError(f"unknown modality {name!r}; {hint}allowed: {allowed}")


_ALIASES = {
    "vision": Modality.IMAGE,
    "language": Modality.TEXT,
    "point_cloud": Modality.POINT,
    "points": Modality.POINT,
    "pointcloud": Modality.POINT,
    "events": Modality.EVENT,
    "event_stream": Modality.EVENT,
}
_BY_NAME = {m.value: m for m in Modality} | _ALIASES

#: Modalities whose raw input is a tensor that attacks can perturb (all but text).
PERCEPTUAL_MODALITIES = tuple(m for m in Modality if m is not Modality.TEXT)

#: A batch maps modalities to raw inputs: tensors, or lists of strings for text.
Batch = Mapping[Modality, torch.Tensor | list]


def parse_modalities(names: str | list[str] | tuple[str, ...], *, available: tuple[Modality, ...]) -> list[Modality]:
    """Parse ``"all"``, a comma-separated string or a list into modalities the caller supports.

    Names are canonical keys or aliases, in any case; the result keeps the order given and drops
    repeats (``"vision,audio,image"`` -> [IMAGE, AUDIO]); ``"all"`` alone gives ``available``.

    Raises:
        UnknownNameError: for an unknown name, or one outside ``available``.
        ConfigError: for no names at all, ``all`` combined with other names, or input that is
            neither a string nor a list of strings.
    """
    allowed = f"allowed: all, {', '.join(m.value for m in available)}"
    given = names
    if isinstance(names, str):
        names = [part for part in names.split(",") if part.strip()]
    elif not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"modalities must be a comma-separated string or a list of names, got {names!r}; {allowed}")
    if not names:
        raise ConfigError(f"no modality given; {allowed}")
    if any(str(name).strip().lower() == "all" for name in names):
        if len(names) > 1:
            raise ConfigError(
                f"'all' cannot be combined with other modalities, got {given!r}; give 'all' alone or a list"
            )
        return list(available)
    chosen: list[Modality] = []
    for name in names:
        modality = Modality.parse(name)
        if modality not in available:
            raise UnknownNameError(f"modality {modality.value!r} is not available here; {allowed}")
        if modality not in chosen:
            chosen.append(modality)
    return chosen
