"""Before/after evaluation of a calibration, robust accuracy measured two ways and both reported.

- transfer: adversarial examples computed on the uncalibrated encoder, fed to the calibrated one
  (what a calibration gains against an attacker who does not know it is there);
- adaptive: the standard ensemble end to end through the calibration, then Square, with EOT for
  randomized purifiers (what it gains against an attacker who does). Only this one is a robustness claim.

The ensemble runs once on the uncalibrated encoder as its own evaluation does: each attack on the
samples that encoder still withstands (top-1 or top-5; top-1 only without ``RobustSettings.top5``). The examples give both the "before" worst
case and the transfer worst case of the calibrated model: a transfer attacker keeps attacking a
sample only until the encoder it can see is fooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark
from bindguard.data.rows import Rows
from bindguard.encoders import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.centers import benchmark_centers
from bindguard.encoders.expectation import EOT_SAMPLES, with_expectation
from bindguard.evaluation.clean import embed_all
from bindguard.evaluation.metrics import recall_at_k, wilson_interval
from bindguard.evaluation.robust import (
    Progress,
    RobustSettings,
    WorstCase,
    _attack_in_batches,
    attack_stages,
    evaluate_robust,
    top_hits,
)
from bindguard.objectives import ObjectiveContext
from bindguard.objectives.base import center_scores


def _mean(hits: torch.Tensor) -> float:
    return float(hits.float().mean())


def _scores(encoder: Encoder, modality: Modality, x: Rows, centers: torch.Tensor, batch_size: int) -> torch.Tensor:
    return center_scores(embed_all(encoder, modality, x, batch_size=batch_size), centers)


def transfer_worst_cases(
    base: Encoder,
    calibrated: Encoder,
    modality: Modality,
    x: Rows,
    labels: torch.Tensor,
    centers: torch.Tensor,
    threat: ThreatModel,
    settings: RobustSettings,
    progress: Progress | None = None,
) -> tuple[WorstCase, WorstCase]:
    """(worst case of ``base``, worst case of ``calibrated`` on the same examples), over the ensemble."""
    clean = embed_all(base, modality, x, batch_size=settings.batch_size)
    context = ObjectiveContext(labels=labels, centers=centers, clean=clean, logit_scale=base.logit_scale(modality))
    before = WorstCase(*top_hits(center_scores(clean, centers), labels))
    transfer = WorstCase(*top_hits(_scores(calibrated, modality, x, centers, settings.batch_size), labels))
    stages = attack_stages(settings, threat)
    for number, (name, build, _) in enumerate(stages):
        if progress:
            progress(f"{modality.value} {threat} transfer", number, len(stages))
        index = before.attackable(settings.top5)  # what the uncalibrated encoder still withstands
        if index.numel():
            (on_base, on_calibrated), norms, _ = _attack_in_batches(
                build(), base, modality, x, index, context, settings.batch_size, judges=[base, calibrated]
            )
            before.narrow(index, *on_base, norms)
            transfer.narrow(index, *on_calibrated, norms)
        before.after[name] = _mean(before.top1)
        transfer.after[name] = _mean(transfer.top1)
    return before, transfer


def instance_alignment(
    base: Encoder, calibrated: Encoder, benchmark: Benchmark, modality: Modality, batch_size: int
) -> dict | None:
    """Clean instance retrieval R@1 from ``modality`` into a partner modality embedded by the *uncalibrated*
    encoder, before and after calibration: whether the calibrated embeddings still sit in the shared space.

    None when the benchmark has no partner derived from the same instances (e.g. spoken digits).
    """
    partner = Modality.DEPTH if modality is Modality.IMAGE else Modality.IMAGE
    if partner not in benchmark.data or benchmark.data[partner].source != benchmark.data[modality].source:
        return None
    query_data, gallery_data = benchmark.data[modality], benchmark.data[partner]
    gallery = embed_all(base, partner, gallery_data.inputs, batch_size=batch_size)
    relevant = query_data.instance_ids[:, None] == gallery_data.instance_ids[None, :]

    def recall_at_1(encoder: Encoder) -> float:
        queries = embed_all(encoder, modality, query_data.inputs, batch_size=batch_size)
        return recall_at_k(queries @ gallery.T, relevant, (1,))[1]

    return {"gallery": partner.value, "before": recall_at_1(base), "after": recall_at_1(calibrated)}


def evaluate_calibration(
    base: Encoder,
    calibrated: CalibratedEncoder,
    benchmark: Benchmark,
    threat: ThreatModel,
    *,
    settings: RobustSettings | None = None,
    modalities: Sequence[Modality] | None = None,
    state_directory: Path | None = None,
    run_config: dict | None = None,
    progress: Progress | None = None,
) -> tuple[list[dict], list[dict]]:
    """Before/after rows (task ``calibration``) and the calibrated model's full robust rows (with flags).

    Args:
        base: the uncalibrated encoder.
        calibrated: ``base`` with calibrations; modalities without one are skipped.
        benchmark: labelled evaluation data (a split the calibration was not trained on).
        threat: the budget of the claim.
        settings: ensemble, steps, Square queries and sanity checks, the same for before and after.
    """
    settings = settings or RobustSettings()
    chosen = [m for m in (modalities or benchmark.modalities) if m.value in calibrated.calibrations]
    attacked = with_expectation(calibrated)
    robust_rows = evaluate_robust(
        attacked,
        benchmark,
        [threat],
        modalities=chosen,
        settings=settings,
        state_directory=state_directory,
        run_config=(run_config or {}) | {"calibrated": True},
        progress=progress,
    )
    total = base.num_parameters()
    rows = []
    for modality, robust in zip(chosen, robust_rows, strict=True):
        data = benchmark.data[modality]
        centers = benchmark_centers(base, benchmark, modality)
        before_clean = top_hits(_scores(base, modality, data.inputs, centers, settings.batch_size), data.labels)
        before, transfer = transfer_worst_cases(
            base, attacked, modality, data.inputs, data.labels, centers, threat, settings, progress
        )
        calibration = calibrated.calibrations[modality.value]
        config = calibration.config
        n = len(data)
        low, high = wilson_interval(robust["top1"] * n, n)
        rows.append(
            {
                "modality": modality.value,
                "task": "calibration",
                "method": config.method,
                "recipe": config.recipe.get("name", "custom"),
                "objective": config.objective,
                "mode": config.recipe.get("mode", "adaptive"),
                "train_threat": config.threat,
                "norm": threat.norm,
                "eps": threat.eps,
                "eps_abs": robust["eps_abs"],
                "attack": settings.ensemble.name,
                "attacks": robust["attacks"],
                "steps": settings.steps,
                "square_queries": settings.square_queries,
                "eot_samples": EOT_SAMPLES if calibration.randomized else 1,
                "n": n,
                "before": {
                    "clean_top1": _mean(before_clean[0]),
                    "clean_top5": _mean(before_clean[1]),
                    "robust_top1": _mean(before.top1),
                    "robust_top5": _mean(before.top5),
                },
                "after": {
                    "clean_top1": robust["clean_top1"],
                    "clean_top5": robust["clean_top5"],
                    "transfer_top1": _mean(transfer.top1),
                    "transfer_top5": _mean(transfer.top5),
                    "robust_top1": robust["top1"],
                    "robust_top5": robust["top5"],
                    "robust_top1_ci95": [low, high],
                },
                "instance_recall@1": instance_alignment(base, attacked, benchmark, modality, settings.batch_size),
                "trainable_parameters": calibration.trainable_parameters(),
                "trainable_fraction": calibration.trainable_parameters() / total,
                "train_seconds": config.recipe.get("train_seconds"),
                "flags": robust["flags"],
            }
        )
    return rows, robust_rows
