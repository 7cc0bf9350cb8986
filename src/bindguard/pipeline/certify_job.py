"""``bindguard.certify_samples``: certified L2 radii of a randomized-smoothing calibration."""

from __future__ import annotations

from pathlib import Path

import torch

from bindguard._checks import check_count, check_number
from bindguard._types import Modality
from bindguard.data import Benchmark
from bindguard.data.rows import all_rows
from bindguard.encoders import Encoder
from bindguard.encoders.centers import benchmark_centers
from bindguard.errors import ConfigError
from bindguard.evaluation.certify import certify
from bindguard.pipeline.setup import check_data_name, load_data, load_encoder


def certify_samples(
    encoder: Encoder | str,
    calibration: str | Path,
    data: Benchmark | str = "builtin",
    *,
    modality: str = "image",
    n: int = 100,
    draws: int = 256,
    alpha: float = 0.001,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Certify ``n`` test samples; returns the summary (per-radius certified accuracy) and per-sample radii."""
    check_data_name(data)
    check_count("n", n, 1)
    check_count("draws", draws, 8)
    if check_number("alpha", alpha, least=0.0, inclusive=False) > 0.5:
        raise ConfigError(f"--alpha must be in (0, 0.5], got {alpha!r}")
    chosen = Modality.parse(modality)
    model = load_encoder(encoder, weights=weights, calibration=calibration, device=device)
    model.check_modality(chosen)
    benchmark = load_data(data, model, [chosen], split="test", limit=n, required=True)
    batch = benchmark.data[chosen]
    centers = benchmark_centers(model, benchmark, chosen)
    certificate = certify(model, chosen, all_rows(batch.inputs), centers, n=draws, alpha=alpha)
    correct = certificate.prediction == batch.labels
    largest = float(certificate.radius.max())
    radii = sorted({0.0, *(largest * f for f in (0.25, 0.5, 0.75, 1.0))})
    curve = [
        {"radius": r, "certified_top1": float((correct & (certificate.radius >= r)).float().mean())} for r in radii
    ]
    return {
        "modality": chosen.value,
        "n": len(batch),
        "sigma": certificate.sigma,
        "draws": draws,
        "alpha": alpha,
        "abstained": int((certificate.prediction < 0).sum()),
        "mean_radius_correct": float(certificate.radius[correct].mean()) if correct.any() else 0.0,
        "curve": curve,
        "radius": certificate.radius.tolist(),
    }
