"""The objective interface: a per-sample loss to maximise, and a per-sample success test."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import torch

from bindguard.errors import ConfigError


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective may compare an embedding with. Fields an objective does not need stay None.

    Attributes:
        labels: (B,) true class (or, for retrieval, index of the paired gallery item).
        centers: (C, D) unit-norm class centers (or gallery embeddings), frozen.
        clean: (B, D) unit-norm embeddings of the clean inputs.
        target: (B, D) unit-norm embeddings to move onto (targeted cross-modal attack).
        target_labels: (B,) class to push towards (targeted zero-shot attacks).
        queries: (B, Q, D) unit-norm embeddings of the queries that should retrieve each sample
            when it is a gallery item (its captions); padding rows are zero.
        thresholds: (B, Q, R) for each of those queries, the r-th best score (r = 1..R) among the
            other, clean gallery items: the query retrieves the sample within the top r while its
            score is above column r - 1; padding queries hold 2 (above any cosine).
        logit_scale: multiplies cosine similarities before a softmax; evaluation and calibration set
            the encoder's own (``Encoder.logit_scale``), the default is CLIP's for contexts built by hand.
    """

    labels: torch.Tensor | None = None
    centers: torch.Tensor | None = None
    clean: torch.Tensor | None = None
    target: torch.Tensor | None = None
    target_labels: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None
    logit_scale: float = 100.0

    def subset(self, index: torch.Tensor) -> ObjectiveContext:
        """The context of the samples at ``index`` (centers are shared, not indexed)."""

        def pick(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[index]

        return replace(
            self,
            labels=pick(self.labels),
            clean=pick(self.clean),
            target=pick(self.target),
            target_labels=pick(self.target_labels),
            queries=pick(self.queries),
            thresholds=pick(self.thresholds),
        )

    def require(self, owner: str, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"objective {owner!r} needs {', '.join(missing)} in its context")


class Objective(ABC):
    """A differentiable attack objective over embeddings."""

    name: str = "objective"
    needs: tuple[str, ...] = ()
    unit_norm: bool = True  # whether the loss reads unit-norm embeddings (False: raw outputs, e.g. logits)
    min_classes: int = 1  # classes (rows of ``centers``) the loss needs to mean anything

    @abstractmethod
    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        """(B,) per-sample loss to maximise, from (B, D) unit-norm embeddings."""

    @abstractmethod
    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        """(B,) booleans: the attack has achieved its goal on this sample."""

    def check(self, context: ObjectiveContext) -> None:
        """Refuse a context that lacks what the loss reads.

        Raises:
            ConfigError: for a missing field, or fewer classes than ``min_classes``.
        """
        context.require(self.name, *self.needs)
        if context.centers is not None and context.centers.shape[0] < self.min_classes:
            raise ConfigError(
                f"objective {self.name!r} needs at least {self.min_classes} classes, got {context.centers.shape[0]}; "
                "fix: evaluate on a data set with more classes"
            )


def center_scores(embedding: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(B, C) cosine similarity of unit embeddings to each class's semantic centers.

    ``centers`` is (C, D), one center per class, or (C, K, D), several description embeddings per
    class (UniBind-style), scored by the nearest of the K: the class of the top-1 center overall.
    """
    if centers.dim() == 2:
        return embedding @ centers.T
    return torch.einsum("bd,ckd->bck", embedding, centers).amax(dim=-1)


def class_scores(embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
    """(B, C) cosine similarities to the centers."""
    return center_scores(embedding, context.centers)


def top_k_hit(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) whether the label is among the k best scores."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
