"""Label-free and targeted objectives in embedding space."""

from __future__ import annotations

import torch

from bindguard.objectives.base import Objective, ObjectiveContext, center_scores


class EmbeddingDistortion(Objective):
    """Push the embedding away from its clean value, with no labels: L = 1 - <z', z>.

    Downstream-agnostic (FARE's threat): whatever reads the embedding sees it move. Success is
    judged by the zero-shot top-1 when labels and centers are given, else by cosine < ``threshold``.
    """

    name = "embed"
    needs = ("clean",)

    def __init__(self, *, threshold: float = 0.5):
        self.threshold = threshold

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return 1.0 - (embedding * context.clean).sum(-1)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        if context.labels is not None and context.centers is not None:
            return center_scores(embedding, context.centers).argmax(1) != context.labels
        return (embedding * context.clean).sum(-1) < self.threshold


class TargetedEmbedding(Objective):
    """Move the input onto a chosen target embedding (e.g. from another modality): L = <z', t>.

    The "adversarial illusion" threat: an image that embeds as a chosen sound. Success: the
    target is closer than the clean embedding was to itself by ``margin``-free test
    <z', t> > <z', z>, i.e. the input now looks more like the target than like itself.
    """

    name = "cross-modal"
    needs = ("target", "clean")

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return (embedding * context.target).sum(-1)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return (embedding * context.target).sum(-1) > (embedding * context.clean).sum(-1)
