"""A learned floor for a log-power front end (the ``floor`` part).

A log-mel front end computes log(power + floor). With the tiny floors that encoders ship (1e-6),
the quiet bins around a sound are where a small waveform perturbation moves the features most: a
perturbation far below the speech in loudness lifts a silent bin by many log units. Raising the
floor per band compresses what lies below it, so the trunk no longer sees that change at full
size. It can only hide power below the floor: on TinyBind audio the start that helped was 10, above
most of the speech's own bands (benchmarks/README.md, the floor screens). The floor stays
differentiable, so attacks go through it end to end (no BPDA needed).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedFloor(nn.Module):
    """One floor per frequency band, learned in log space (always positive), replacing a front end's buffer.

    Args:
        buffer: the name of the floor buffer inside the encoder (``Encoder.log_floor``).
        bands: how many bands; the floor broadcasts as (bands, 1) over (B, bands, frames).
        initial: the starting floor in the front end's power units.
    """

    def __init__(self, buffer: str, bands: int, initial: float):
        super().__init__()
        self.buffer = buffer
        self.log_floor = nn.Parameter(torch.full((bands, 1), math.log(initial)))

    def overrides(self) -> dict[str, torch.Tensor]:
        """``{buffer name: floor}`` for ``functional_call``."""
        return {self.buffer: self.log_floor.exp()}
