"""Sanity flags after AutoAttack's checks and Carlini et al.'s advice, written into every robust row.

- ``non-deterministic``: two forward passes of the same input differ (randomness masks gradients).
- ``zero-gradients``: some inputs have an all-zero input gradient (gradient masking).
- ``large-eps-not-zero``: at a very large budget accuracy stays above chance, so the attack is too weak.
- ``rises-with-steps`` / ``not-converged``: APGD with twice the steps gives higher / clearly lower accuracy.
- ``rises-with-eps``: robust top-1 or top-5 accuracy grows with the budget.
- ``black-box-beats-white-box``: Square broke samples that every gradient attack missed.
- ``bf16-disagrees``: attacked in bfloat16, some adversarial inputs got another top-1 verdict in
  float32 (the float32 verdict is the one counted; set by the robust evaluation).
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.data.rows import Rows
from bindguard.encoders import Encoder
from bindguard.evaluation.clean import embed_all
from bindguard.objectives import ObjectiveContext
from bindguard.objectives.base import center_scores

if TYPE_CHECKING:
    from bindguard.evaluation.robust import RobustSettings
    from bindguard.evaluation.state import RunState

LARGE_EPS = 64 / 255
MIN_GAP_SAMPLES = 2  # differences of one sample are noise, not a finding


class SanityChecker:
    """Runs the per-modality checks once and the per-threat ones on demand."""

    def __init__(
        self,
        encoder: Encoder,
        modality: Modality,
        x: Rows,
        labels: torch.Tensor,
        centers: torch.Tensor,
        settings: RobustSettings,
    ):
        self.encoder, self.modality, self.settings = encoder, modality, settings
        correct = (
            center_scores(embed_all(encoder, modality, x, batch_size=settings.batch_size), centers).argmax(1) == labels
        )
        chosen = torch.nonzero(correct).flatten()[: settings.check_samples]
        self.x, self.labels, self.centers = x[chosen], labels[chosen], centers
        self.scale = encoder.logit_scale(modality)
        self.context = ObjectiveContext(labels=self.labels, centers=centers, logit_scale=self.scale)
        self.modality_checks = self._modality_checks() if len(chosen) else {}

    def _accuracy_after(self, attack_name: str, threat: ThreatModel, steps: int) -> float:
        attack = create_attack(attack_name, threat=threat, steps=steps, seed=self.settings.seed)
        result = attack.run(self.encoder, self.modality, self.x, self.context)
        return 1.0 - float(result.success.float().mean())

    def _modality_checks(self) -> dict:
        device = self.encoder.device
        with torch.no_grad():
            first = self.encoder.encode_modality(self.modality, self.x.to(device))
            second = self.encoder.encode_modality(self.modality, self.x.to(device))
        x = self.x.to(device).requires_grad_(True)
        logits = self.scale * self.encoder.encode_modality(self.modality, x) @ self.centers.to(device).T
        (gradient,) = torch.autograd.grad(F.cross_entropy(logits, self.labels.to(device), reduction="sum"), x)
        zero = (gradient.flatten(1).abs().amax(1) == 0).float().mean()
        large = ThreatModel("linf", LARGE_EPS)
        return {
            "deterministic": bool(torch.equal(first, second)),
            "zero_gradient_fraction": float(zero),
            "large_eps": {
                "eps": LARGE_EPS,
                "attack": "apgd-ce",
                "top1": self._accuracy_after("apgd-ce", large, self.settings.steps),
            },
            "samples": int(self.x.shape[0]),
        }

    def _modality_flags(self) -> list[str]:
        checks, flags = self.modality_checks, []
        if not checks:
            return flags
        if not checks["deterministic"]:
            flags.append("non-deterministic")
        if checks["zero_gradient_fraction"] > 0:
            flags.append("zero-gradients")
        chance = 1.0 / self.centers.shape[0]
        if checks["large_eps"]["top1"] > chance + MIN_GAP_SAMPLES / checks["samples"]:
            flags.append("large-eps-not-zero")
        return flags

    def check_threat(self, threat: ThreatModel, row: dict, state: RunState) -> tuple[list[str], dict]:
        """Flags and check figures for one robust row (the steps check is resumable through ``state``)."""
        flags = self._modality_flags()
        checks = dict(self.modality_checks)
        if self.x.shape[0]:
            steps = state.get("steps_check")
            if steps is None:
                steps = {
                    "attack": "apgd-ce",
                    "steps": self.settings.steps,
                    "top1": self._accuracy_after("apgd-ce", threat, self.settings.steps),
                    "top1_double_steps": self._accuracy_after("apgd-ce", threat, 2 * self.settings.steps),
                }
                state.put("steps_check", steps)
            checks["more_steps"] = steps
            gap = MIN_GAP_SAMPLES / self.x.shape[0]
            if steps["top1_double_steps"] > steps["top1"] + gap:
                flags.append("rises-with-steps")
            elif steps["top1_double_steps"] < steps["top1"] - gap:
                flags.append("not-converged")
        if row.get("square", {}).get("broken", 0) > 0:
            flags.append("black-box-beats-white-box")
        return flags, checks

    @staticmethod
    def check_sweep(rows: list[dict]) -> None:
        """Flag rows whose robust accuracy is higher than at a smaller budget of the same norm."""
        for norm in {row["norm"] for row in rows}:
            ordered = sorted((row for row in rows if row["norm"] == norm), key=lambda row: row["eps"])
            for smaller, larger in pairwise(ordered):
                rise = max(larger[metric] - smaller[metric] for metric in ("top1", "top5"))
                if rise * larger["n"] >= MIN_GAP_SAMPLES:
                    larger["flags"].append("rises-with-eps")
