"""The one encoder interface: raw input in, embedding out, differentiable end to end."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import Modality
from bindguard.errors import InvalidInputError, UnknownNameError
from bindguard.modalities import InputSpec


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``found`` from loading into a module whose state is ``expected``, or None if it fits."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    if not (missing or unexpected or wrong):
        return None
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"


class Encoder(nn.Module, ABC):
    """A unified multimodal encoder.

    Subclasses implement ``input_spec`` and ``_embed``; ``encode`` validates the raw input
    against the spec, so every backend rejects bad input the same way.

    Attributes:
        name: registry id, e.g. ``"tinybind"``.
        modalities: the modalities it embeds.
        embed_dim: size of the shared embedding.
    """

    name: str
    modalities: tuple[Modality, ...]
    embed_dim: int

    @abstractmethod
    def input_spec(self, modality: Modality) -> InputSpec:
        """The raw-input contract of a (non-text) modality."""

    @abstractmethod
    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        """Unnormalised (B, D) embeddings of a validated batch."""

    def check_modality(self, modality: Modality | str) -> Modality:
        modality = Modality.parse(modality)
        if modality not in self.modalities:
            allowed = ", ".join(m.value for m in self.modalities)
            raise UnknownNameError(f"encoder {self.name!r} has no {modality.value!r} tower; allowed: {allowed}")
        return modality

    def encode_modality(
        self, modality: Modality | str, x: torch.Tensor | Sequence[str], *, normalize: bool = True
    ) -> torch.Tensor:
        """Embed one modality's raw batch.

        Args:
            modality: which tower.
            x: raw input following ``input_spec(modality)``, or a list of strings for text.
            normalize: return unit-norm embeddings.

        Returns:
            (B, embed_dim) embeddings, differentiable with respect to ``x``.

        Raises:
            InvalidInputError: for input that breaks the spec.
        """
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            if isinstance(x, str) or not isinstance(x, Sequence) or not x or not all(isinstance(t, str) for t in x):
                raise InvalidInputError("text input must be a non-empty list of strings")
        else:
            x = self.input_spec(modality).validate(x)
        embedding = self._embed(modality, x)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_unvalidated(self, modality: Modality, x: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """``encode_modality`` without the input checks, for attack loops that validated the clean input once."""
        embedding = self._embed(modality, x)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode(
        self, batch: Mapping[Modality | str, torch.Tensor | Sequence[str]], *, normalize: bool = True
    ) -> dict[Modality, torch.Tensor]:
        """Embed a batch of several modalities: ``{modality: raw input}`` -> ``{modality: (B, D)}``."""
        return {
            Modality.parse(modality): self.encode_modality(modality, x, normalize=normalize)
            for modality, x in batch.items()
        }

    def forward(self, batch: Mapping[Modality | str, torch.Tensor | Sequence[str]]) -> dict[Modality, torch.Tensor]:
        return self.encode(batch)
