"""FGSM (Goodfellow et al. 2015): one step of size eps along the sign (Linf) or normalised (L2) gradient."""

from __future__ import annotations

import torch

from bindguard.attacks.base import Attack, Forward, loss_and_gradient
from bindguard.modalities import InputSpec
from bindguard.objectives import ObjectiveContext


class FGSM(Attack):
    name = "fgsm"

    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        _, gradient, _ = loss_and_gradient(forward, self.objective, x, context)
        step = self.threat.absolute(spec) * self.threat.ascent(gradient, spec)
        return x + self.threat.project(x, step, spec), x.shape[0]
