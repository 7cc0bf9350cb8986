"""What a run will cost before it starts: passes counted from the settings, a pass timed on this machine.

Full-size ImageBind costs about 30 s for one forward+backward of one image on 2 CPU cores, so a
100-step attack ensemble over 100 images would take weeks there. Timing one pass is cheap next
to that, and says what this machine and model would cost before any of it is spent: a large
encoder on the CPU is timed before every run (``warn_if_slow``), and ``estimate_cost`` (``bindguard
eval --estimate``) predicts any run from a timed batch without running it.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

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


def check_passes(settings: RobustSettings, threats: int) -> float:
    """Forward+backward passes of the sanity checks on each of their samples: one gradient, APGD at a
    large eps once per modality, and APGD at ``steps`` and twice that per threat."""
    if not settings.checks:
        return 0.0
    return 1 + settings.steps + threats * 3 * settings.steps


def time_batch_pass(encoder: Encoder, modality: Modality, batch: int, repeats: int = 3) -> float:
    """Seconds of one forward+backward per sample, timed on a batch of ``batch`` mid-domain inputs
    (after one untimed pass that warms caches and kernels; the median of ``repeats``)."""
    spec = encoder.input_spec(modality)
    low, high = spec.domain
    inputs = torch.full((batch, *spec.shape), (low + high) / 2, device=encoder.device)
    inputs = (inputs + 0.01 * (high - low) * torch.rand_like(inputs)).clamp(low, high)
    seconds = []
    for repeat in range(repeats + 1):
        sample = inputs.clone().requires_grad_(True)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize(encoder.device)
        started = time.perf_counter()
        embedding = encoder.encode_modality(modality, sample, validate=False)
        torch.autograd.grad(embedding.sum(), sample)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize(encoder.device)
        if repeat:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) / batch


@dataclass(frozen=True)
class CostEstimate:
    """A run's predicted wall time, per modality and in all, without running it.

    The least is every sample broken by the first attack; the most, every sample robust to the end
    (each attack then runs on all of them). Clean embedding and Square's queries count as a third
    of a forward+backward each.
    """

    rows: list[dict]
    processes: int

    @property
    def least_seconds(self) -> float:
        return sum(row["least_seconds"] for row in self.rows)

    @property
    def most_seconds(self) -> float:
        return sum(row["most_seconds"] for row in self.rows)


def estimate_cost(
    encoder: Encoder,
    samples: dict[Modality, int],
    settings: RobustSettings | None,
    threats: int,
    *,
    batch_size: int,
    processes: int = 1,
) -> CostEstimate:
    """Predict the seconds of an evaluation of ``samples`` per modality from one timed batch each.

    Args:
        encoder: the model exactly as it will run (its device, calibration and EOT included).
        samples: test samples per modality.
        settings: the attack settings; None for a clean evaluation.
        threats: budgets swept.
        batch_size: samples per pass, as the run will use.
        processes: ranks sharing the work (torchrun); checks run on every rank.
    """
    rows = []
    for modality, count in samples.items():
        per_pass = time_batch_pass(encoder, modality, min(batch_size, max(count, 1)))
        # forward passes of all samples: the clean rows, then per robust run the clean scores, the
        # checks' choice of samples and one per threat
        clean = count * (1 if settings is None else 2 + settings.checks + threats) / 3
        least = most = checks = 0.0
        if settings is not None:
            first = settings.ensemble.members[0]
            least = threats * int(first.options.get("targets", 1)) * (settings.steps if first.uses_steps else 1)
            most = passes_per_sample(settings, threats)
            checks = check_passes(settings, threats) * min(settings.check_samples, count)
        rows.append(
            {
                "modality": modality.value,
                "samples": count,
                "seconds_per_pass": per_pass,
                "passes_least": least,
                "passes_most": most,
                "check_passes": checks,
                "least_seconds": per_pass * ((clean + count * least) / processes + checks),
                "most_seconds": per_pass * ((clean + count * most) / processes + checks),
            }
        )
    return CostEstimate(rows=rows, processes=processes)


#: Share of the free accelerator memory a batch may take; the rest absorbs fragmentation and the
#: attack's own tensors (the out-of-memory fallback halves a batch that still does not fit).
MEMORY_SHARE = 0.7


def fitting_batch_size(encoder: Encoder, modalities: Sequence[Modality], requested: int) -> int:
    """The largest batch, up to ``requested``, whose forward+backward fits the free accelerator memory.

    On the CPU the request stands. On CUDA, one forward+backward of 2 samples per modality is
    measured (peak allocated bytes) and ``MEMORY_SHARE`` of the free memory is divided by the
    costliest modality's bytes per sample.
    """
    if encoder.device.type != "cuda":
        return requested
    free, _ = torch.cuda.mem_get_info(encoder.device)
    per_sample = max(_bytes_per_sample(encoder, modality) for modality in modalities)
    fitting = max(1, int(MEMORY_SHARE * free // max(per_sample, 1)))
    if fitting < requested:
        logger.warning(
            "batch size %d would not fit %.1f GB of free GPU memory (%.0f MB per sample); using %d",
            requested, free / 1e9, per_sample / 1e6, fitting,
        )  # fmt: skip
    return min(requested, fitting)


def _bytes_per_sample(encoder: Encoder, modality: Modality) -> float:
    spec = encoder.input_spec(modality)
    low, high = spec.domain
    torch.cuda.synchronize(encoder.device)
    torch.cuda.reset_peak_memory_stats(encoder.device)
    before = torch.cuda.memory_allocated(encoder.device)
    sample = torch.full((2, *spec.shape), (low + high) / 2, device=encoder.device, requires_grad=True)
    embedding = encoder.encode_modality(modality, sample, validate=False)
    torch.autograd.grad(embedding.sum(), sample)
    peak = torch.cuda.max_memory_allocated(encoder.device) - before
    return peak / 2
