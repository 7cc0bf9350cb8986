"""The ranking objective: push the embedding away from its ground truth relative to every other center.

After the reference paper's v2 ("CrossMaxim"): a targeted attack leaves the true class high in
the ranking, so top-5 survives; this objective lowers the true similarity below *all* others.

    L = sum_{k != y} softplus(s * (<z, c_k> - <z, c_y>)) / (C - 1)

Each term rewards overtaking one more class; success means the true class has left the top k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.objectives.base import Objective, ObjectiveContext, class_scores, top_k_hit


class RankingPush(Objective):
    name = "rank"
    needs = ("labels", "centers")

    def __init__(self, *, top_k: int = 5):
        self.top_k = top_k

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)  # (B, C)
        true = scores.gather(1, context.labels[:, None])  # (B, 1)
        gaps = F.softplus(context.logit_scale * (scores - true) / 10.0)  # (B, C); soft count of classes above y
        others = torch.ones_like(scores).scatter(1, context.labels[:, None], 0.0)
        return (gaps * others).sum(1) / others.sum(1)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, self.top_k)
