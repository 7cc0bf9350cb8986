"""Auto-PGD (Croce & Hein 2020): momentum, step-size halving on stagnation, restarts; CE, DLR and targeted.

Per sample and step:  z = P(x_k + eta * ascent(grad)),  x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))
with a = 0.75. At checkpoints w_j (spaced as p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06))
the step size eta halves, restarting from the best point, when fewer than 75% of the steps since
the last checkpoint raised the loss, or when neither eta nor the best loss moved since then.
"""

from __future__ import annotations

import math

import torch

from bindguard.attacks.base import Attack, BestTracker, Forward, loss_and_gradient
from bindguard.attacks.threat import ThreatModel
from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec
from bindguard.objectives import Objective, ObjectiveContext, ZeroShotDLR, ZeroShotTargetedDLR
from bindguard.objectives.base import center_scores

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step size."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    return sorted({min(steps, math.ceil(p * steps)) for p in fractions if math.ceil(p * steps) <= steps} - {0})


class APGD(Attack):
    """Auto-PGD on any objective (default CE); ``restarts`` independent random starts.

    Args:
        threat: norm and relative budget.
        objective: what to maximise.
        steps: iterations per restart (AutoAttack uses 100).
        restarts: random restarts; each sample keeps its best.
        seed: seeds the random starts.
        early_stop: stop stepping a sample once the objective's goal is reached (its best is then
            already a success, so the verdict is the same; used when only top-1 is tracked).
    """

    name = "apgd"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        objective: Objective | None = None,
        steps: int = 100,
        restarts: int = 1,
        seed: int = 0,
        early_stop: bool = False,
    ):
        super().__init__(threat, objective=objective, seed=seed)
        self.early_stop = early_stop
        if steps < 2 or restarts < 1:
            raise ConfigError(f"APGD needs steps >= 2 and restarts >= 1, got steps={steps}, restarts={restarts}")
        self.steps, self.restarts = steps, restarts
        self.checkpoints = checkpoints(steps)

    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor]]:
        best = BestTracker(x)
        passes = 0
        for _ in range(self.restarts):
            active = torch.arange(x.shape[0], device=x.device)[~best.success]
            if active.numel() == 0:
                break
            passes += self._single_run(
                forward, self.objective, x[active], spec, context.subset(active), generator, best, active
            )
        return best.x, passes, (best.loss, best.success)

    def _single_run(
        self,
        forward: Forward,
        objective: Objective,
        clean: torch.Tensor,
        spec: InputSpec,
        context: ObjectiveContext,
        generator: torch.Generator,
        best: BestTracker,
        index: torch.Tensor,
    ) -> int:
        count = clean.shape[0]
        view = (-1,) + (1,) * (clean.dim() - 1)
        eta = torch.full((count,), 2.0 * self.threat.absolute(spec), device=clean.device)
        current = clean + self.threat.random_delta(clean, spec, generator)
        loss, gradient, embedding = loss_and_gradient(forward, objective, current, context)
        best.update_at(index, current, loss, objective.success(embedding, context))
        max_x, max_loss, max_gradient = current.clone(), loss.clone(), gradient.clone()
        previous = current.clone()
        increases = torch.zeros(count, device=clean.device)
        last_loss = loss.clone()
        halved_last_time = torch.zeros(count, dtype=torch.bool, device=clean.device)
        checkpoint_max = max_loss.clone()
        last_checkpoint = 0
        passes = count
        for step in range(self.steps):
            # gradient step, then momentum (none on the first step)
            z = clean + self.threat.project(
                clean, current - clean + eta.view(view) * self.threat.ascent(gradient, spec), spec
            )
            if step == 0:
                following = z
            else:
                mixed = current + MOMENTUM * (z - current) + (1 - MOMENTUM) * (current - previous)
                following = clean + self.threat.project(clean, mixed - clean, spec)
            previous, current = current, following
            loss, gradient, embedding = loss_and_gradient(forward, objective, current, context)
            best.update_at(index, current, loss, objective.success(embedding, context))
            passes += len(index)
            if self.early_stop and bool(best.success[index].any()):
                keep = torch.nonzero(~best.success[index]).flatten()
                if keep.numel() == 0:
                    break
                clean, current, previous, gradient, loss, last_loss = (
                    t[keep] for t in (clean, current, previous, gradient, loss, last_loss)
                )
                max_x, max_gradient, max_loss, checkpoint_max = (
                    t[keep] for t in (max_x, max_gradient, max_loss, checkpoint_max)
                )
                eta, increases, halved_last_time, index = (t[keep] for t in (eta, increases, halved_last_time, index))
                context = context.subset(keep)
            increases += (loss > last_loss).float()
            last_loss = loss
            improved = loss > max_loss
            max_x[improved], max_gradient[improved] = current[improved], gradient[improved]
            max_loss = torch.where(improved, loss, max_loss)
            if step + 1 in self.checkpoints:
                window = step + 1 - last_checkpoint
                stalled = increases < RHO * window
                # the paper's second condition: eta was not cut at the last checkpoint and the best did not move
                unchanged = ~halved_last_time & (max_loss <= checkpoint_max)
                halve = stalled | unchanged
                eta = torch.where(halve, eta / 2, eta)
                current, gradient = current.clone(), gradient.clone()  # never write into autograd's buffers
                current[halve], gradient[halve] = max_x[halve], max_gradient[halve]
                previous = torch.where(halve.view(view), current, previous)
                halved_last_time, checkpoint_max = halve, max_loss.clone()
                increases.zero_()
                last_checkpoint = step + 1
        return passes


class APGDTargeted(APGD):
    """APGD with the targeted DLR loss, run once per target: the ``targets`` classes ranked highest after the truth.

    Success is untargeted (top-1 no longer the truth), as in AutoAttack's APGD-T. A data set of C
    classes has only C - 1 classes besides the truth, so at most C - 1 targets run
    (``targets_for``); an evaluation that asked for more can say so with that number.

    Args:
        threat: norm and relative budget.
        steps: iterations per restart and target.
        targets: runner-up classes to target, in order of their clean score; capped at C - 1.
        restarts: random restarts per target; each sample keeps its best.
        seed: seeds the random starts.
    """

    name = "apgd-t"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        steps: int = 100,
        targets: int = 3,
        restarts: int = 1,
        seed: int = 0,
        early_stop: bool = False,
    ) -> None:
        super().__init__(
            threat, objective=ZeroShotDLR(), steps=steps, restarts=restarts, seed=seed, early_stop=early_stop
        )
        if targets < 1:
            raise ConfigError(f"targets must be at least 1, got {targets}")
        self.targets = targets
        self.targeted_objective = ZeroShotTargetedDLR()

    def targets_for(self, num_classes: int) -> int:
        """How many targets run on a data set of ``num_classes`` classes: ``targets``, at most C - 1."""
        return max(0, min(self.targets, num_classes - 1))

    def notes_for(self, num_classes: int) -> list[str]:
        used = self.targets_for(num_classes)
        if used == self.targets:
            return []
        return [f"{self.name}: {used} target class(es), not {self.targets}: the data has {num_classes} classes"]

    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            scores = center_scores(forward(x), context.centers)  # (B, C)
        scores = scores.scatter(1, context.labels[:, None], float("-inf"))
        ranked = scores.argsort(dim=1, descending=True)  # (B, C); the truth last
        best = BestTracker(x)
        passes = x.shape[0]
        for rank in range(self.targets_for(scores.shape[1])):
            targeted = ObjectiveContext(
                labels=context.labels,
                centers=context.centers,
                clean=context.clean,
                target_labels=ranked[:, rank],
                logit_scale=context.logit_scale,
            )
            for _ in range(self.restarts):
                active = torch.arange(x.shape[0], device=x.device)[~best.success]
                if active.numel() == 0:
                    return best.x, passes
                passes += self._single_run(
                    forward, self.targeted_objective, x[active], spec, targeted.subset(active), generator, best, active
                )
        return best.x, passes
