"""Wrap a plain image classifier as an encoder whose embedding is its logits.

Lets every bindguard attack run on ordinary classifiers, e.g. to compare with other attack
libraries on the same model. Pair it with the ``LogitCE`` objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bindguard._types import Modality
from bindguard.encoders.base import Encoder
from bindguard.modalities import InputSpec, image_spec


class ClassifierEncoder(Encoder):
    """``model`` maps normalised (B, 3, H, W) images to (B, classes) logits; inputs are raw [0, 1] pixels."""

    name = "classifier"
    modalities = (Modality.IMAGE,)

    def __init__(
        self,
        model: nn.Module,
        *,
        height: int,
        width: int,
        classes: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ):
        super().__init__()
        self.model = model
        self.embed_dim = classes
        options = {"mean": mean, "std": std} if mean is not None else {"mean": None, "std": None}
        self._spec = image_spec(height, width, **options)

    def input_spec(self, modality: Modality) -> InputSpec:
        self.check_modality(modality)
        return self._spec

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        return self.model(self._spec.normalize(x))
