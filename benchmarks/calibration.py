"""Calibration, measured side by side in one run.

    python benchmarks/calibration.py compare [--modality image] [--n 100] [--steps 20] [--json]
    python benchmarks/calibration.py time-all [--epochs 4]

``compare``: every calibration method on one modality with the same data, eps and attack budget:
clean, transfer and adaptive robust top-1, trainable parameters, wall time, and the wall-time
ratio to full adversarial fine-tuning (target: static calibration <= 1/10 of it).
``time-all``: the default method on all six TinyBind modalities (target: under 15 minutes on 2 cores).

The variants span the paper's post-encoder heads (each objective, trained on examples made
against the frozen encoder, and adaptively), a clean-trained head, in-encoder adapters, input
purifiers, and full adversarial fine-tuning of the tower (TeCoA: CE; FARE: label-free embedding
L2), so that one table says what each buys under transfer and under adaptive attack.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see benchmarks/README.md

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark, load_dataset
from bindguard.encoders import Encoder, create_encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.centers import semantic_centers
from bindguard.evaluation.calibration import evaluate_calibration
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
from bindguard.evaluation.robust import Progress, RobustSettings
from bindguard.training.calibrate import CalibrationRecipe, calibrate_modalities, calibrate_modality

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


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def compare(arguments: argparse.Namespace) -> None:
    modality = Modality.parse(arguments.modality)
    base = create_encoder("tinybind")
    train = load_dataset("builtin", split="train", modalities=[modality], limit=arguments.limit)
    test = load_dataset("builtin", split="test", modalities=[modality], limit=arguments.n)
    recipe = CalibrationRecipe(eps=arguments.eps, epochs=arguments.epochs)
    settings = RobustSettings(
        ensemble=STANDARD_ENSEMBLE, steps=arguments.steps, square_queries=arguments.square_queries, check_samples=16
    )
    chosen = [v for v in VARIANTS if not arguments.only or any(word in v[0] for word in arguments.only.split(","))]
    started = time.perf_counter()
    rows = compare_methods(base, train, test, modality, recipe=recipe, settings=settings, variants=chosen)
    if arguments.json:
        json.dump(
            {"recipe": vars(arguments), "seconds": time.perf_counter() - started, "rows": rows}, sys.stdout, indent=2
        )
        return
    finetune = next((r["train_seconds"] for r in rows if "TeCoA" in r.get("variant", "")), None)
    first = rows[0]
    print(
        f"{modality.value}, {first['norm']} eps {first['eps'] * 255:.0f}/255 (abs {first['eps_abs']:.4g}), "
        f"{first['attack']} ensemble {first['steps']} steps + Square {first['square_queries']}, "
        f"n={first['n']} test samples, {arguments.epochs} epochs on {len(train.data[modality])} train samples\n"
    )
    print(
        "| variant | trainable (% of encoder) | train s | time / full FT | clean | transfer | adaptive | adaptive top-5 | flags |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        after = row["after"]
        ratio = f"{row['train_seconds'] / finetune:.3f}" if finetune and row["train_seconds"] else "-"
        print(
            f"| {row['variant']} | {row['trainable_parameters']:,} ({100 * row['trainable_fraction']:.2f}%) "
            f"| {row['train_seconds']:.0f} | {ratio} | {_percent(after['clean_top1'])} | {_percent(after['transfer_top1'])} "
            f"| {_percent(after['robust_top1'])} | {_percent(after['robust_top5'])} | {', '.join(row['flags']) or 'ok'} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def time_all(arguments: argparse.Namespace) -> None:
    base = create_encoder("tinybind")
    modalities = list(PERCEPTUAL_MODALITIES)
    train = load_dataset("builtin", split="train", modalities=modalities)
    recipe = CalibrationRecipe(epochs=arguments.epochs)
    total = 0.0
    print(
        f"default method {recipe.method}, {recipe.objective}, {recipe.mode}, eps {recipe.eps}, {recipe.epochs} epochs\n"
    )
    print("| modality | train samples | seconds |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for modality in modalities:
            started = time.perf_counter()
            calibrate_modalities(base, train, [modality], recipe, Path(folder))
            seconds = time.perf_counter() - started
            total += seconds
            print(f"| {modality.value} | {len(train.data[modality])} | {seconds:.0f} |", flush=True)
    print(f"| all six | | {total:.0f} ({total / 60:.1f} min; target < 15 min) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("compare")
    one.add_argument("--modality", default="image")
    one.add_argument("--eps", default="4/255")
    one.add_argument("--epochs", type=int, default=4)
    one.add_argument("--limit", type=int, default=None, help="training samples")
    one.add_argument("--n", type=int, default=100, help="test samples")
    one.add_argument("--steps", type=int, default=20)
    one.add_argument("--square-queries", type=int, default=200)
    one.add_argument("--only", default="", help="comma-separated words; keep variants whose label has one")
    one.add_argument("--json", action="store_true")
    every = commands.add_parser("time-all")
    every.add_argument("--epochs", type=int, default=4)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    compare(arguments) if arguments.command == "compare" else time_all(arguments)


if __name__ == "__main__":
    main()
