"""The one encoder interface: raw input in, embedding out, differentiable end to end."""

from __future__ import annotations

import hashlib
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


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or an infinity, or None when all are finite.

    Loaders call it on every tensor they read: a number is never computed from non-finite weights.
    """
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def fingerprint_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """A short SHA-256 of named tensors (names, dtypes, shapes and values): two weight sets, two fingerprints."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


#: The logit scale of CLIP-style encoders (exp of the learned temperature, clamped at 100).
DEFAULT_LOGIT_SCALE = 100.0


class Encoder(nn.Module, ABC):
    """A unified multimodal encoder.

    Subclasses implement ``input_spec`` and ``_embed``; everything generic code needs to know about
    an encoder is asked through this class, so attacks, evaluation and calibration never branch on
    which encoder they run. ``encode_modality`` is the one public, differentiable embedding path.

    Attributes:
        name: registry id, e.g. ``"tinybind"``.
        modalities: the modalities it embeds.
        embed_dim: size of the shared embedding.
    """

    name: str
    modalities: tuple[Modality, ...]
    embed_dim: int

    # --- identity, scale, placement ----------------------------------------------------------

    @property
    def identity(self) -> str:
        """The name plus a fingerprint of the weights actually loaded, e.g. ``"tinybind@3f2a…"``.

        Two checkpoints behind one name have two identities; calibrations and cached results are
        keyed by it. The default hashes every tensor of the state dict once (weights are frozen);
        encoders whose weights come from a file override ``weights_fingerprint`` with the file's hash.
        """
        return f"{self.name}@{self.weights_fingerprint()}"

    def identity_for(self, modalities: Sequence[Modality]) -> str:
        """The identity of the weights that ``modalities`` use; a calibration of them records this.

        The whole ``identity`` by default; an encoder whose towers load from separate files narrows it.
        """
        return self.identity

    def weights_fingerprint(self) -> str:
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = fingerprint_tensors(self.state_dict())
            self.__dict__["_fingerprint"] = cached
        return cached

    @property
    def text_identity(self) -> str:
        """What determines the text embeddings (keys the semantic-center cache); by default the identity."""
        return self.identity

    def logit_scale(self, modality: Modality | str) -> float:
        """The factor on cosine similarities before a softmax over classes, for ``modality``'s embeddings.

        ImageBind learns one per modality; CLIP-style models one for all. Zero-shot losses of attacks
        and calibration use it, so they see the logits the encoder was trained with.
        """
        self.check_modality(modality)
        return DEFAULT_LOGIT_SCALE

    @property
    def device(self) -> torch.device:
        """Where the encoder's weights live; inputs are moved there batch by batch."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        """All parameters of the encoder, every tower included (the 1% calibration budget is relative to it)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def randomized(self) -> bool:
        """Whether two forward passes of one input may differ (then attacks need EOT)."""
        return False

    def log_floor(self, modality: Modality) -> tuple[str, int] | None:
        """Where the modality's front end adds a power floor before a logarithm, if it does.

        ``(buffer name, bands)``: a buffer outside the state dict that ``log(power + floor)`` reads,
        and how many frequency bands a learned floor may set apart (the calibration ``floor`` part
        replaces it). None by default: the modality has no such step.
        """
        return None

    # --- embedding -----------------------------------------------------------------------------

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
        self,
        modality: Modality | str,
        x: torch.Tensor | Sequence[str],
        *,
        normalize: bool = True,
        validate: bool = True,
    ) -> torch.Tensor:
        """Embed one modality's raw batch: the one public, differentiable embedding path.

        Args:
            modality: which tower.
            x: raw input following ``input_spec(modality)``, on ``self.device``, or a list of strings for text.
            normalize: return unit-norm embeddings (False: the tower's raw output, e.g. for a post-encoder head).
            validate: check ``x`` against the spec; attack loops that validated the clean input once pass False.

        Returns:
            (B, embed_dim) embeddings, differentiable with respect to ``x``.

        Raises:
            InvalidInputError: for input that breaks the spec.
        """
        modality = self.check_modality(modality) if validate or not isinstance(modality, Modality) else modality
        if validate and modality is Modality.TEXT:
            if isinstance(x, str) or not isinstance(x, Sequence) or not x or not all(isinstance(t, str) for t in x):
                raise InvalidInputError("text input must be a non-empty list of strings")
        elif validate:
            x = self.input_spec(modality).validate(x)
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
