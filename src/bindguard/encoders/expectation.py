"""Expectation over transformation (EOT): the mean embedding over several draws of a randomized encoder.

Attacking a randomized model through one draw per step mistakes noise for robustness; averaging
the embeddings of ``samples`` draws gives the attack the expected gradient (Athalye et al. 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.encoders.base import Encoder
from bindguard.modalities import InputSpec


class ExpectationEncoder(Encoder):
    """``encoder`` with every embedding averaged over ``samples`` random draws."""

    def __init__(self, encoder: Encoder, samples: int = 8):
        super().__init__()
        self.inner, self.samples = encoder, samples
        self.name = encoder.name
        self.text_identity = getattr(encoder, "text_identity", encoder.name)
        self.modalities, self.embed_dim = encoder.modalities, encoder.embed_dim

    def input_spec(self, modality: Modality) -> InputSpec:
        return self.inner.input_spec(modality)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.inner._embed(modality, x)
        draws = [F.normalize(self.inner._embed(modality, x), dim=-1) for _ in range(self.samples)]
        return torch.stack(draws).mean(0)
