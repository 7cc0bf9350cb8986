"""The ranking objective: push the embedding away from its ground truth relative to every other center.

After the reference paper's v2 ("CrossMaxim"): a targeted attack leaves the true class high in
the ranking, so top-5 survives; this objective lowers the true similarity below *all* others.

    L = sum_{k != y} softplus(s * (<z, c_k> - <z, c_y>) / 10) / (C - 1)

Each term rewards overtaking one more class; success means the true class has left the top k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.objectives.base import Objective, ObjectiveContext, class_scores, top_k_hit


class RankingPush(Objective):
    """The ranking push above; success: the truth is no longer among the ``top_k`` best classes.

    Works for any number of classes C >= 2 (no rank past the last class is read). Where C <= ``top_k``
    the truth can never leave the top k, so success is never reached and the attack keeps the
    iterate of highest loss, which still pushes the truth down the ranking (and top-1 with it).

    Args:
        top_k: the ranking depth whose loss counts as success.
    """

    name = "rank"
    needs = ("labels", "centers")
    min_classes = 2

    def __init__(self, *, top_k: int = 5) -> None:
        self.top_k = top_k

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)  # (B, C)
        true = scores.gather(1, context.labels[:, None])  # (B, 1)
        gaps = F.softplus(context.logit_scale * (scores - true) / 10.0)  # (B, C); soft count of classes above y
        others = torch.ones_like(scores).scatter(1, context.labels[:, None], 0.0)
        return (gaps * others).sum(1) / others.sum(1)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, self.top_k)
