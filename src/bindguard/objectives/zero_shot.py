"""Zero-shot classification objectives over cosine similarities to frozen semantic centers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.objectives.base import Objective, ObjectiveContext, class_scores, top_k_hit


class ZeroShotCE(Objective):
    """Cross-entropy of scaled cosine logits: L = -log softmax(s * <z, c>)_y. Success: top-1 wrong."""

    name = "ce"
    needs = ("labels", "centers")

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        logits = context.logit_scale * class_scores(embedding, context)
        return F.cross_entropy(logits, context.labels, reduction="none")

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, 1)


def _sorted_scores(scores: torch.Tensor) -> torch.Tensor:
    return scores.sort(dim=1, descending=True).values


class ZeroShotDLR(Objective):
    """Difference of logits ratio (Croce & Hein 2020), invariant to the logit scale:

    DLR = -(s_y - max_{i != y} s_i) / (s_pi1 - s_pi3 + 1e-12), with s sorted as s_pi1 >= s_pi2 >= ...
    """

    name = "dlr"
    needs = ("labels", "centers")

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)
        ordered = _sorted_scores(scores)
        true = scores.gather(1, context.labels[:, None]).squeeze(1)
        others = scores.scatter(1, context.labels[:, None], float("-inf")).amax(1)
        return -(true - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, 1)


class ZeroShotTargetedDLR(Objective):
    """Targeted DLR: -(s_y - s_t) / (s_pi1 - (s_pi3 + s_pi4) / 2 + 1e-12), pushing towards class t."""

    name = "dlr-targeted"
    needs = ("labels", "centers", "target_labels")

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)
        ordered = _sorted_scores(scores)
        true = scores.gather(1, context.labels[:, None]).squeeze(1)
        target = scores.gather(1, context.target_labels[:, None]).squeeze(1)
        return -(true - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, 1)
