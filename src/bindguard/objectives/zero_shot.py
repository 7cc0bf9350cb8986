"""Zero-shot classification objectives over cosine similarities to frozen semantic centers.

The DLR losses divide by a spread of the sorted scores s_pi1 >= s_pi2 >= ... that the standard
form takes from the 3rd and 4th best classes. With fewer classes (data sets of two or three
classes) a rank past the last class falls back to the smallest score; with two classes there is
no ratio that stays meaningful (any shift- and scale-invariant function of two scores is a sign,
whose gradient is zero), so the denominator is 1 and the loss is the plain cosine margin. From
four classes on, the losses are exactly the published ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bindguard.objectives.base import Objective, ObjectiveContext, class_scores, top_k_hit


class ZeroShotCE(Objective):
    """Cross-entropy of scaled cosine logits: L = -log softmax(s * <z, c>)_y. Success: top-1 wrong."""

    name = "ce"
    needs = ("labels", "centers")
    min_classes = 2

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

    With two classes the denominator is 1 (see the module docstring): L = -(s_y - s_other).
    """

    name = "dlr"
    needs = ("labels", "centers")
    min_classes = 2

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)  # (B, C)
        true = scores.gather(1, context.labels[:, None]).squeeze(1)
        others = scores.scatter(1, context.labels[:, None], float("-inf")).amax(1)
        if scores.shape[1] < 3:
            return -(true - others)
        ordered = _sorted_scores(scores)
        return -(true - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, 1)


class ZeroShotTargetedDLR(Objective):
    """Targeted DLR: -(s_y - s_t) / (s_pi1 - (s_pi3 + s_pi4) / 2 + 1e-12), pushing towards class t.

    With three classes s_pi4 falls back to the smallest score s_pi3, so the denominator is
    s_pi1 - s_pi3; with two it is 1 (see the module docstring): L = -(s_y - s_t).
    """

    name = "dlr-targeted"
    needs = ("labels", "centers", "target_labels")
    min_classes = 2

    def loss(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        scores = class_scores(embedding, context)  # (B, C)
        true = scores.gather(1, context.labels[:, None]).squeeze(1)
        target = scores.gather(1, context.target_labels[:, None]).squeeze(1)
        if scores.shape[1] < 3:
            return -(true - target)
        ordered = _sorted_scores(scores)
        fourth = min(3, scores.shape[1] - 1)  # the smallest score where there is no 4th class
        return -(true - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, fourth]) + 1e-12)

    def success(self, embedding: torch.Tensor, context: ObjectiveContext) -> torch.Tensor:
        return ~top_k_hit(class_scores(embedding, context), context.labels, 1)
