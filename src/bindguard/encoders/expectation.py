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

#: Draws averaged per embedding when a randomized encoder is attacked or evaluated.
EOT_SAMPLES = 8


def with_expectation(encoder: Encoder, samples: int = EOT_SAMPLES) -> Encoder:
    """The model to attack and measure: ``encoder`` itself, or its EOT average when it is randomized.

    This is the one place the EOT policy is decided; it is idempotent.
    """
    if isinstance(encoder, ExpectationEncoder) or not encoder.randomized:
        return encoder
    return ExpectationEncoder(encoder, samples)


class ExpectationEncoder(Encoder):
    """``encoder`` with every embedding averaged over ``samples`` random draws."""

    def __init__(self, encoder: Encoder, samples: int = EOT_SAMPLES):
        super().__init__()
        self.inner, self.samples = encoder, samples
        self.name = encoder.name
        self.modalities, self.embed_dim = encoder.modalities, encoder.embed_dim

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def text_identity(self) -> str:
        return self.inner.text_identity

    def logit_scale(self, modality: Modality | str) -> float:
        return self.inner.logit_scale(modality)

    def num_parameters(self) -> int:
        return self.inner.num_parameters()

    @property
    def randomized(self) -> bool:
        return self.inner.randomized  # an average of finitely many draws is still random

    def input_spec(self, modality: Modality) -> InputSpec:
        return self.inner.input_spec(modality)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.inner._embed(modality, x)
        draws = [F.normalize(self.inner._embed(modality, x), dim=-1) for _ in range(self.samples)]
        return torch.stack(draws).mean(0)
