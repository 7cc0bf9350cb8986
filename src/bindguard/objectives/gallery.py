"""Hiding a gallery item from its own queries: text->media retrieval with the media side attacked.

A retrieval gallery holds each media item once, so an attacker perturbs an item once for all the
queries (captions) that should find it. Query q retrieves the item within the top r while its
score <q, z> beats t_qr, the r-th best score among the other, clean gallery items. The loss is
the binary cross-entropy of "still retrieved", averaged over the item's queries:

    L = mean_q softplus(s * (t_qr - <q, z>))

It grows as each query's score falls below its threshold; success is no query retrieving the item
within the top r. Padding queries (zero embeddings, threshold 2) add a constant and never succeed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.errors import ConfigError
from bindguard.objectives.base import Objective, ObjectiveContext


def query_scores(embedding: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(B, Q) each gallery item's score for each of its own queries."""
    return torch.einsum("bd,bqd->bq", embedding, queries.to(embedding.dtype))


def retrieved_within(embedding: torch.Tensor, context: ObjectiveContext, depth: int) -> torch.Tensor:
    """(B, Q) whether each query still ranks its item among the top ``depth`` of the gallery."""
    return query_scores(embedding, context.queries) > context.thresholds[..., depth - 1].to(embedding.dtype)


class GalleryHide(Objective):
    """The loss above at depth ``top_k``; success: no query retrieves the item within ``top_k``.

    Args:
        top_k: the depth to push the item below (1: out of first place; 10: out of Recall@10).
    """

    name = "hide"
    needs = ("queries", "thresholds")

    def __init__(self, *, top_k: int = 1) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be an integer >= 1, got {top_k!r}")
        self.top_k = top_k

    def check(self, context: ObjectiveContext) -> None:
        super().check(context)
        if context.thresholds.shape[-1] < self.top_k:
            raise ConfigError(
                f"objective {self.name!r} at depth {self.top_k} needs thresholds for {self.top_k} ranks, "
                f"got {context.thresholds.shape[-1]}"
            )

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        thresholds = context.thresholds[..., self.top_k - 1].to(embedding.dtype)
        margins = thresholds - query_scores(embedding, context.queries)
        return F.softplus(context.logit_scale * margins).mean(1)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~retrieved_within(embedding, context, self.top_k).any(1)
