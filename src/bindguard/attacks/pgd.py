"""PGD (Madry et al. 2018) with random start, restarts, a step-size schedule and per-sample best tracking."""

from __future__ import annotations

import math

import torch

from bindguard.attacks.base import Attack, BestTracker, Forward, loss_and_gradient
from bindguard.attacks.threat import ThreatModel
from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec
from bindguard.objectives import Objective, ObjectiveContext

SCHEDULES = ("constant", "cosine")


class PGD(Attack):
    """Projected gradient ascent on the objective.

    Args:
        threat: norm and relative budget.
        objective: what to maximise (default: zero-shot cross-entropy).
        steps: gradient steps per restart.
        step_size: relative step (fraction of the domain range); default 2.5 * eps / steps, at
            least eps / 4, the usual choice that lets the iterate cross the ball.
        random_start: start from a random point in the ball (restart 0 too).
        restarts: independent runs; each sample keeps its best.
        schedule: ``constant`` or ``cosine`` decay of the step size.
        early_stop: stop updating samples whose goal is reached (the result is the same, faster).
        seed: seeds the random starts.
        within: ``(start, total)`` when each batch attacked is rows ``start:`` of a larger batch of
            ``total`` (one process's share of a batch): the random starts are that batch's. Needs
            ``early_stop=False``, which keeps every row in every restart.
    """

    name = "pgd"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        objective: Objective | None = None,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        schedule: str = "constant",
        early_stop: bool = True,
        seed: int = 0,
        within: tuple[int, int] | None = None,
    ):
        super().__init__(threat, objective=objective, seed=seed)
        if within is not None and early_stop:
            raise ConfigError("within (a share of a larger batch) needs early_stop=False")
        self.within = within
        if steps < 1 or restarts < 1:
            raise ConfigError(f"steps and restarts must be at least 1, got steps={steps}, restarts={restarts}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown step-size schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"step_size must be > 0, got {step_size}")
        self.steps, self.restarts, self.schedule = steps, restarts, schedule
        self.step_size = step_size or max(2.5 * threat.eps / steps, threat.eps / 4)
        self.random_start, self.early_stop = random_start, early_stop

    def _alpha(self, step: int, spec: InputSpec) -> float:
        alpha = self.step_size * spec.range
        if self.schedule == "cosine":
            alpha *= 0.5 * (1 + math.cos(math.pi * step / self.steps))
        return alpha

    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        best = BestTracker(x)
        passes = 0
        for _ in range(self.restarts):
            active = torch.arange(x.shape[0], device=x.device)
            if self.early_stop:
                active = active[~best.success]
            if active.numel() == 0:
                break
            clean = x[active]
            sub = context.subset(active)
            delta = (
                self.threat.random_delta(clean, spec, generator, within=self.within)
                if self.random_start
                else torch.zeros_like(clean)
            )
            for step in range(self.steps):
                current = clean + delta
                loss, gradient, embedding = loss_and_gradient(forward, self.objective, current, sub)
                passes += len(active)
                success = self.objective.success(embedding, sub)
                best.update_at(active, current, loss, success)
                if self.early_stop and bool(success.any()):
                    keep = ~success
                    active, clean, delta, gradient = active[keep], clean[keep], delta[keep], gradient[keep]
                    sub = context.subset(active)
                    if active.numel() == 0:
                        break
                step_delta = delta + self._alpha(step, spec) * self.threat.ascent(gradient, spec)
                delta = self.threat.project(clean, step_delta, spec)
            if active.numel():
                with torch.no_grad():
                    embedding = forward(clean + delta)
                passes += len(active)
                best.update_at(
                    active, clean + delta, self.objective.loss(embedding, sub), self.objective.success(embedding, sub)
                )
        return best.x, passes, (best.loss, best.success)
