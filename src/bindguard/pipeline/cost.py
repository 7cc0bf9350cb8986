"""A warning before a run that would take hours: a full-size encoder on the CPU is timed on one sample first.

Full-size ImageBind costs about 30 s for one forward+backward of one image on 2 CPU cores, so a
100-step attack ensemble over 100 images would take weeks there. Timing one pass is cheap next
to that, and says what this machine and model would cost before any of it is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from bindguard._types import Modality
from bindguard.encoders import Encoder
from bindguard.evaluation.robust import RobustSettings

logger = logging.getLogger(__name__)

#: Encoders of at least this many parameters on the CPU are timed before a run (TinyBind has 4.6 M).
LARGE_MODEL_PARAMETERS = 50_000_000
#: A run predicted to take longer than this is announced with its estimate and the way out.
WARN_SECONDS = 3600.0


def passes_per_sample(settings: RobustSettings, threats: int) -> float:
    """Forward+backward passes one sample costs at most: every gradient attack's steps (APGD-T once per
    target class), Square's queries as forward passes (about a third of a forward+backward each)."""
    gradient = 0
    for member in settings.ensemble.members:
        gradient += int(member.options.get("targets", 1)) * (settings.steps if member.uses_steps else 1)
    return threats * (gradient + settings.square_queries / 3)


def time_one_pass(encoder: Encoder, modality: Modality) -> float:
    """Seconds of one forward+backward of one raw sample (mid-domain), measured."""
    spec = encoder.input_spec(modality)
    low, high = spec.domain
    sample = torch.full((1, *spec.shape), (low + high) / 2, device=encoder.device, requires_grad=True)
    started = time.perf_counter()
    embedding = encoder.encode_modality(modality, sample, validate=False)
    torch.autograd.grad(embedding.sum(), sample)
    return time.perf_counter() - started


def warn_if_slow(encoder: Encoder, modalities: Sequence[Modality], *, samples: int, passes: float) -> float | None:
    """Predict a run's seconds for a large encoder on the CPU and warn when it exceeds ``WARN_SECONDS``.

    Returns:
        The predicted seconds, or None when the encoder is small or on an accelerator (not timed).
    """
    if encoder.device.type != "cpu" or encoder.num_parameters() < LARGE_MODEL_PARAMETERS:
        return None
    seconds = {modality: time_one_pass(encoder, modality) for modality in modalities}
    predicted = sum(seconds.values()) * samples * passes
    if predicted > WARN_SECONDS:
        slowest = max(seconds, key=seconds.get)
        logger.warning(
            "this run would take about %.0f hours on the CPU (%s: one forward+backward of one sample took %.1f s, "
            "times %d samples and about %.0f passes each); run it on a GPU (--device cuda) or lower --n and --steps",
            predicted / 3600,
            slowest.value,
            seconds[slowest],
            samples,
            passes,
        )
    return predicted
