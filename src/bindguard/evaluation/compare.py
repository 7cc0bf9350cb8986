"""Calibration methods side by side on one modality: same data, eps and attack budget for every one.

The variants span the paper's post-encoder heads (each objective, trained on examples made
against the frozen encoder, and adaptively), a clean-trained head, in-encoder adapters, input
purifiers, and full adversarial fine-tuning of the tower (TeCoA: CE; FARE: label-free embedding
L2), so that one table says what each buys under transfer and under adaptive attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.centers import semantic_centers
from bindguard.evaluation.calibration import evaluate_calibration
from bindguard.evaluation.robust import Progress, RobustSettings
from bindguard.training.calibrate import CalibrationRecipe, calibrate_modality

# (label, recipe changes from the shared recipe)
VARIANTS: tuple[tuple[str, dict], ...] = (
    ("clean-trained head", {"method": "head", "objective": "clean", "mode": "static"}),
    ("paper head, ce, static", {"method": "head", "objective": "ce", "mode": "static"}),
    ("paper head, l2, static", {"method": "head", "objective": "l2", "mode": "static"}),
    ("paper head, infonce, static", {"method": "head", "objective": "infonce", "mode": "static"}),
    ("paper residual head, ce, static", {"method": "residual-head", "objective": "ce", "mode": "static"}),
    ("paper head, ce, adaptive", {"method": "head", "objective": "ce", "mode": "adaptive"}),
    ("lora, ce, adaptive", {"method": "lora", "objective": "ce", "mode": "adaptive"}),
    ("purifier, ce, adaptive", {"method": "purifier", "objective": "ce", "mode": "adaptive"}),
    ("purifier+lora, ce, adaptive", {"method": "purifier+lora", "objective": "ce", "mode": "adaptive"}),
    (
        "full fine-tune, TeCoA ce, adaptive",
        {"method": "finetune", "objective": "ce", "mode": "adaptive", "learning_rate": 2e-4},
    ),
    (
        "full fine-tune, FARE l2, adaptive",
        {"method": "finetune", "objective": "l2", "mode": "adaptive", "reg": 0.0, "learning_rate": 2e-4},
    ),
)


def compare_methods(
    base: Encoder,
    train: Benchmark,
    test: Benchmark,
    modality: Modality,
    *,
    recipe: CalibrationRecipe,
    settings: RobustSettings,
    variants: Sequence[tuple[str, dict]] = VARIANTS,
    progress: Progress | None = None,
) -> list[dict]:
    """One calibration row per variant (plus "none"), each with its wall time and trainable parameters.

    The threat of the claim is the recipe's; every variant is evaluated with the same ensemble,
    steps, Square queries and samples.
    """
    threat = ThreatModel.parse(recipe.norm, recipe.eps)
    data = train.data[modality]
    centers = semantic_centers(base, train.class_names, train.templates[modality])
    rows = []
    for label, changes in variants:
        variant = replace(recipe, **changes)
        started = time.perf_counter()
        outcome = calibrate_modality(base, modality, data.inputs, data.labels, centers, variant, progress=progress)
        seconds = time.perf_counter() - started
        calibrated = CalibratedEncoder(base, {modality: outcome.calibration})
        row, _ = evaluate_calibration(
            base, calibrated, test, threat, settings=settings, modalities=[modality], progress=progress
        )
        rows.append(row[0] | {"variant": label, "train_seconds": seconds})
    none = dict(rows[0]) if rows else {}
    if none:
        before = none["before"]
        none |= {
            "variant": "no calibration",
            "method": "none",
            "objective": "-",
            "mode": "-",
            "after": {
                "clean_top1": before["clean_top1"],
                "clean_top5": before["clean_top5"],
                "transfer_top1": before["robust_top1"],
                "transfer_top5": before["robust_top5"],
                "robust_top1": before["robust_top1"],
                "robust_top5": before["robust_top5"],
            },
            "trainable_parameters": 0,
            "trainable_fraction": 0.0,
            "train_seconds": 0.0,
            "flags": [],
        }
    return ([none] if none else []) + rows
