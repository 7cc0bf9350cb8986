"""Objectives for plain classifiers, whose "embedding" is a vector of logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.objectives.base import Objective, ObjectiveContext


class LogitCE(Objective):
    """Cross-entropy on raw logits (the embedding is not normalised): the classic attack loss."""

    name = "logit-ce"
    needs = ("labels",)
    unit_norm = False

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return F.cross_entropy(embedding, context.labels, reduction="none")

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return embedding.argmax(1) != context.labels
