"""Training losses of calibration: what the calibrated embedding should do on adversarial inputs.

Notation: z(x) is the calibrated unit-norm embedding, f(x) the frozen original one (uncalibrated
encoder, clean input), c_k the frozen semantic centers, s a logit scale, x' the adversarial input.

    ce        L = -log softmax_k(s <z(x'), c_k>)_y                      fixed-center CE (TeCoA)
    l2        L = ||z(x') - f(x)||^2                                    clean-to-adversarial alignment (FARE)
    infonce   L = -log softmax_j(<z(x'_i), f(x_j)> / tau)_i            clean-adversarial InfoNCE over the batch
    clean     L = -log softmax_k(s <z(x), c_k>)_y                      no adversarial examples (baseline)
    distill   L = ||z(x + u) - f(x)||^2, u uniform in the eps-ball       feature distillation toward the
                                                                        frozen clean embedding (no attack)
    stable    L = -log softmax_k(s <z(x'), c_k>)_y + ||z(x') - f(x)||^2 CE and alignment together

and the modality-consistency regulariser, on clean inputs, added with weight ``reg``:

    R = -log softmax_k(s <z(x), c_k>)_y + ||z(x) - f(x)||^2

Its first term keeps the clean embedding aligned with the text centers, the second with the
original space that the other modalities are bound to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bindguard.errors import UnknownNameError
from bindguard.objectives.base import center_scores


@dataclass(frozen=True)
class CalibrationBatch:
    """One training batch, all embeddings unit-norm.

    Attributes:
        adversarial: (B, D) z(x'), or None for the ``clean`` objective.
        clean: (B, D) z(x), or None where the loss does not use it (``reg`` 0 and an adversarial objective).
        frozen: (B, D) f(x).
        centers: (C, D) semantic centers.
        labels: (B,) classes.
    """

    adversarial: torch.Tensor | None
    clean: torch.Tensor | None
    frozen: torch.Tensor
    centers: torch.Tensor
    labels: torch.Tensor


def fixed_center_ce(embedding: torch.Tensor, batch: CalibrationBatch, scale: float) -> torch.Tensor:
    return F.cross_entropy(scale * center_scores(embedding, batch.centers), batch.labels)


def alignment_l2(embedding: torch.Tensor, batch: CalibrationBatch) -> torch.Tensor:
    return (embedding - batch.frozen).square().sum(-1).mean()


def clean_adversarial_infonce(embedding: torch.Tensor, batch: CalibrationBatch, temperature: float) -> torch.Tensor:
    logits = embedding @ batch.frozen.T / temperature
    return F.cross_entropy(logits, torch.arange(len(embedding), device=embedding.device))


def consistency(batch: CalibrationBatch, scale: float) -> torch.Tensor:
    return fixed_center_ce(batch.clean, batch, scale) + alignment_l2(batch.clean, batch)


# objective -> (the second input of each training pair, what the inner attack maximises):
# "attack" is an adversarial example, "noise" a uniform random point of the eps-ball, None none
OBJECTIVES = {
    "ce": ("attack", "ce"),
    "l2": ("attack", "embed"),
    "infonce": ("attack", "embed"),
    "stable": ("attack", "ce"),
    "distill": ("noise", None),
    "clean": (None, None),
}


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        import difflib

        close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(f"unknown calibration objective {name!r}; {hint}allowed: {', '.join(OBJECTIVES)}")
    return name


def calibration_loss(
    name: str, batch: CalibrationBatch, *, reg: float, scale: float, temperature: float = 0.1
) -> torch.Tensor:
    """The objective ``name`` plus ``reg`` times the consistency regulariser (see the module docstring).

    ``scale`` is the logit scale of the CE terms: the encoder's own (``Encoder.logit_scale``) unless a recipe sets one.
    """
    if name == "clean":
        main = fixed_center_ce(batch.clean, batch, scale)
    elif name == "ce":
        main = fixed_center_ce(batch.adversarial, batch, scale)
    elif name == "l2" or name == "distill":
        main = alignment_l2(batch.adversarial, batch)
    elif name == "stable":
        main = fixed_center_ce(batch.adversarial, batch, scale) + alignment_l2(batch.adversarial, batch)
    elif name == "infonce":
        main = clean_adversarial_infonce(batch.adversarial, batch, temperature)
    else:
        check_objective(name)
    return main + reg * consistency(batch, scale) if reg else main
