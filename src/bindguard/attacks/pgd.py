"""PGD (Madry et al. 2018) with random start, restarts, a step-size schedule and per-sample best tracking."""

from __future__ import annotations

import math
from collections import deque

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
        batch_size: attack at most this many samples at once, and when one stops (goal reached, or
            its steps spent) let the next sample take its row: continuous batching, which keeps
            every forward+backward full while early stopping drops samples. Each sample gets its
            random start when it enters. None (default): every sample of the batch at once.
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
        batch_size: int | None = None,
    ):
        super().__init__(threat, objective=objective, seed=seed)
        if within is not None and early_stop:
            raise ConfigError("within (a share of a larger batch) needs early_stop=False")
        if within is not None and batch_size is not None:
            raise ConfigError(
                "within (a share of a larger batch) and batch_size (continuous batching) exclude each other"
            )
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.within, self.batch_size = within, batch_size
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
        if self.batch_size is not None:
            return self._perturb_streaming(forward, x, spec, context, generator)
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

    def _perturb_streaming(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Continuous batching: rows are (sample, restart, step) and leave when done; waiting samples fill them.

        Each row is evaluated at steps 0..steps with one forward+backward and moves after each but
        the last, so a sample costs what it costs in the batch version (steps + 1 evaluations); the
        evaluation of a row's final iterate rides along in the next full forward+backward.
        """
        best = BestTracker(x)
        waiting = deque((sample, 0) for sample in range(x.shape[0]))  # (sample, restart)
        rows = torch.empty(0, dtype=torch.long, device=x.device)
        restarts, steps, delta = rows.clone(), rows.clone(), x[:0].clone()
        passes = 0
        while waiting or rows.numel():
            free = min(self.batch_size - rows.numel(), len(waiting))
            if free:
                entering = [waiting.popleft() for _ in range(free)]
                new = torch.tensor([sample for sample, _ in entering], device=x.device)
                start = (
                    self.threat.random_delta(x[new], spec, generator) if self.random_start else torch.zeros_like(x[new])
                )
                rows = torch.cat([rows, new])
                restarts = torch.cat([restarts, torch.tensor([restart for _, restart in entering], device=x.device)])
                steps = torch.cat([steps, torch.zeros_like(new)])
                delta = torch.cat([delta, start])
            clean, sub = x[rows], context.subset(rows)
            current = clean + delta
            final = steps >= self.steps  # rows whose last iterate this call only evaluates
            if bool(final.all()):
                with torch.no_grad():
                    embedding = forward(current)
                loss, gradient = self.objective.loss(embedding, sub), None
            else:
                loss, gradient, embedding = loss_and_gradient(forward, self.objective, current, sub)
            passes += rows.numel()
            success = self.objective.success(embedding, sub)
            best.update_at(rows, current, loss, success)
            leaving = final | success if self.early_stop else final
            for sample, restart in zip(rows[final].tolist(), restarts[final].tolist(), strict=True):
                if restart + 1 < self.restarts and not (self.early_stop and bool(best.success[sample])):
                    waiting.append((sample, restart + 1))
            stay = ~leaving
            if gradient is None or not bool(stay.any()):
                rows, restarts, steps, delta = rows[stay], restarts[stay], steps[stay], delta[stay]
                continue
            shape = (-1,) + (1,) * (x.dim() - 1)
            alpha = torch.tensor([self._alpha(step, spec) for step in steps[stay].tolist()], dtype=x.dtype)
            moved = delta[stay] + alpha.to(x.device).view(shape) * self.threat.ascent(gradient[stay], spec)
            delta = self.threat.project(clean[stay], moved, spec)
            rows, restarts, steps = rows[stay], restarts[stay], steps[stay] + 1
        return best.x, passes, (best.loss, best.success)
