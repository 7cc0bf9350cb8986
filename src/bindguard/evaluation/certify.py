"""Certified L2 radius of a randomized-smoothing calibration (Cohen, Rosenfeld & Kolter 2019).

The smoothed classifier predicts the class the noisy model picks most often. With ``n0`` draws to
guess that class and ``n`` more to bound its probability from below (Clopper-Pearson, level
``alpha``), the prediction provably cannot change within L2 radius sigma * Phi^-1(p_lower) of the
input, in the raw input's units; below p_lower = 1/2 it abstains. The guarantee covers every part
applied after the noise (the denoiser, the frozen encoder, any adapter and head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import beta, norm

from bindguard._types import Modality
from bindguard.encoders import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.errors import ConfigError
from bindguard.objectives.base import center_scores

ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """Per sample: smoothed prediction (``ABSTAIN`` = -1), certified L2 radius (0 when abstaining)."""

    prediction: torch.Tensor
    radius: torch.Tensor
    sigma: float


@torch.no_grad()
def _counts(
    encoder: Encoder, modality: Modality, x: torch.Tensor, centers: torch.Tensor, draws: int, batch_size: int
) -> torch.Tensor:
    counts = torch.zeros(x.shape[0], centers.shape[0], dtype=torch.long)
    device = encoder.device
    centers = centers.to(device)
    for start in range(0, draws, batch_size):
        repeats = min(batch_size, draws - start)
        for index in range(x.shape[0]):
            noisy = x[index : index + 1].to(device).expand(repeats, *x.shape[1:])
            votes = center_scores(encoder.encode_modality(modality, noisy, validate=False), centers).argmax(1)
            counts[index] += torch.bincount(votes, minlength=centers.shape[0]).cpu()
    return counts


def certify(
    encoder: CalibratedEncoder,
    modality: Modality,
    x: torch.Tensor,
    centers: torch.Tensor,
    *,
    n0: int = 32,
    n: int = 256,
    alpha: float = 0.001,
    batch_size: int = 64,
) -> Certificate:
    """Certify each sample of ``x`` (validated raw inputs) under the calibration's smoothing noise."""
    calibration = encoder.calibration_of(modality) if isinstance(encoder, CalibratedEncoder) else None
    if calibration is None or not calibration.randomized:
        raise ConfigError(
            f"certification needs a randomized purifier on {modality.value}; fix: bindguard calibrate "
            "--method purifier --noise 0.1 (any noise > 0)"
        )
    purifier = calibration.purifier
    sigma = purifier.noise * (purifier.high - purifier.low)
    x = encoder.input_spec(modality).validate(x)
    guess = _counts(encoder, modality, x, centers, n0, batch_size).argmax(1)
    counts = _counts(encoder, modality, x, centers, n, batch_size)
    hits = counts.gather(1, guess[:, None]).squeeze(1).numpy()
    lower = torch.tensor(beta.ppf(alpha, hits, n - hits + 1), dtype=torch.float64).nan_to_num(0.0)
    certified = lower > 0.5
    radius = torch.where(certified, sigma * torch.tensor(norm.ppf(lower.clamp(max=1 - 1e-12).numpy())), 0.0)
    prediction = torch.where(certified, guess, torch.full_like(guess, ABSTAIN))
    return Certificate(prediction, radius.float(), sigma)
