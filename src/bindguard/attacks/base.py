"""The attack interface: an attack maximises an objective inside a threat model, in the raw domain."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from bindguard._types import Modality
from bindguard.attacks.threat import ThreatModel
from bindguard.encoders import Encoder
from bindguard.errors import ConfigError, InvalidInputError
from bindguard.modalities import InputSpec
from bindguard.objectives import Objective, ObjectiveContext, ZeroShotCE

Forward = Callable[[torch.Tensor], torch.Tensor]
BUDGET_TOLERANCE = 1e-5


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        adversarial: inputs of the same shape as the clean ones, inside budget and domain.
        success: (B,) whether the objective's goal was reached.
        loss: (B,) the objective at ``adversarial``.
        norms: (B,) achieved perturbation size in the domain's units, under the threat's norm.
        forward_passes: per-sample forward evaluations spent, the final check included (cost accounting).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    norms: torch.Tensor
    forward_passes: int


class Attack(ABC):
    """Base class: input checks, mode handling, seeding and the budget guarantee live here.

    Subclasses implement ``_perturb``, which receives a validated clean batch and a differentiable
    ``forward`` (raw input -> unit-norm embedding) and returns adversarial inputs.
    """

    name: str = "attack"
    norms: tuple[str, ...] = ("linf", "l2")
    uses_gradients: bool = True

    def __init__(self, threat: ThreatModel, *, objective: Objective | None = None, seed: int = 0):
        if threat.norm not in self.norms:
            raise ConfigError(
                f"attack {self.name!r} does not support norm {threat.norm!r}; allowed: {', '.join(self.norms)}"
            )
        self.threat = threat
        self.objective = objective or ZeroShotCE()
        self.seed = seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat}, objective={self.objective.name})"

    def notes_for(self, num_classes: int) -> list[str]:
        """What a result row should say about how this attack ran on ``num_classes`` classes (e.g. capped targets)."""
        return []

    def run(
        self, encoder: Encoder, modality: Modality | str, x: torch.Tensor, context: ObjectiveContext
    ) -> AttackResult:
        """Attack a clean batch.

        Args:
            encoder: the model, attacked end to end through whatever it contains.
            modality: which tower.
            x: clean raw inputs (B, ...) following ``encoder.input_spec(modality)``; not modified.
            context: labels, centers, clean or target embeddings the objective needs.

        Returns:
            An ``AttackResult``; the encoder's train/eval mode is restored afterwards.

        Raises:
            InvalidInputError: for input that breaks the modality's spec.
            ConfigError: for a context that lacks what the objective needs.
        """
        modality = encoder.check_modality(modality)
        if modality is Modality.TEXT:
            raise InvalidInputError("text is discrete; attacks perturb the other modalities' raw inputs")
        spec = encoder.input_spec(modality)
        home = x.device if isinstance(x, torch.Tensor) else None
        clean = spec.validate(x).detach().to(encoder.device)  # moved batch by batch, handed back where it came from
        context = _on_device(context, clean.device)
        self.objective.check(context)
        modes = {module: module.training for module in encoder.modules()}  # restored one by one: mixed modes survive
        encoder.eval()
        try:
            generator = torch.Generator(device=clean.device).manual_seed(self.seed)

            unit_norm = self.objective.unit_norm

            def forward(inputs: torch.Tensor) -> torch.Tensor:
                return encoder.encode_modality(modality, inputs, normalize=unit_norm, validate=False)

            adversarial, passes, *tracked = self._perturb(forward, clean.clone(), spec, context, generator)
            if tracked:  # the attack already evaluated its result with this objective: no extra forward
                loss, success = tracked[0]
            else:
                with torch.no_grad():
                    embedding = forward(adversarial)
                    loss = self.objective.loss(embedding, context)
                    success = self.objective.success(embedding, context)
                passes += clean.shape[0]
        finally:
            for module, training in modes.items():
                module.training = training
        norms = self.threat.norms(adversarial - clean, spec)
        self._check_budget(norms, adversarial, spec)
        return AttackResult(adversarial.detach().to(home), success.to(home), loss.to(home), norms.to(home), passes)

    def _check_budget(self, norms: torch.Tensor, adversarial: torch.Tensor, spec: InputSpec) -> None:
        budget = self.threat.absolute(spec)
        if float(norms.max()) > budget * (1 + BUDGET_TOLERANCE) + 1e-7 or spec.out_of_domain(adversarial) > 1e-5:
            raise RuntimeError(
                f"{self.name} left its budget or domain (max norm {float(norms.max()):.6g} > {budget:.6g})"
            )

    @abstractmethod
    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple:
        """Return (adversarial inputs, forward passes spent), optionally with a third item
        (loss, success) of the returned inputs under ``self.objective``, which spares a final forward."""


def _on_device(context: ObjectiveContext, device: torch.device) -> ObjectiveContext:
    """The context with every tensor on ``device``."""
    moved = {
        name: value.to(device)
        for name, value in vars(context).items()
        if isinstance(value, torch.Tensor) and value.device != device
    }
    return replace(context, **moved) if moved else context


def loss_and_gradient(
    forward: Forward, objective: Objective, x: torch.Tensor, context: ObjectiveContext
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss, its gradient with respect to ``x``, and the embedding (all detached)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        embedding = forward(x)
        loss = objective.loss(embedding, context)
        (gradient,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), gradient, embedding.detach()


class BestTracker:
    """Per-sample best iterate: the first successful one, else the one with the highest loss."""

    def __init__(self, x: torch.Tensor):
        self.x = x.clone()
        self.loss = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        self.update_at(torch.arange(x.shape[0], device=x.device), x, loss, success)

    def update_at(self, index: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        """Update the samples at ``index`` with candidates ``x`` (rows aligned with ``index``)."""
        done = self.success[index]
        take = (success & ~done) | (~done & ~success & (loss > self.loss[index]))
        chosen = index[take]
        self.x[chosen] = x[take].detach()
        self.loss[chosen] = loss[take].to(self.loss.dtype)
        self.success[index] = done | success
