"""``bindguard calibrate``: train per-modality calibrations, then measure them before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.options import CheckpointOption, DeviceOption, JsonOption, QuietOption
from bindguard.cli.tables import terminal_tables
from bindguard.cli.terminal import console, output, progress_bars, user_errors

DEFAULT_METHOD = "purifier+lora"
DEFAULT_OBJECTIVE = "ce"


@user_errors
def calibrate_command(
    out: Annotated[Path, typer.Option(help="Calibration folder: config.json, model.safetensors, results.json.")],
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[str, typer.Option(help="Data set name (bindguard data list) with a train split.")] = "builtin",
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities, or 'all'.")] = "all",
    method: Annotated[
        str, typer.Option(help="purifier, lora, head, residual-head, finetune, or parts joined by '+'.")
    ] = DEFAULT_METHOD,
    objective: Annotated[
        str, typer.Option(help="ce, l2, infonce, or clean (no adversarial examples).")
    ] = DEFAULT_OBJECTIVE,
    mode: Annotated[
        str, typer.Option(help="adaptive (attack the model being trained) or static (the frozen one).")
    ] = "adaptive",
    reg: Annotated[float, typer.Option(help="Weight of the modality-consistency regulariser (>= 0).")] = 1.0,
    eps: Annotated[str, typer.Option(help="Training and evaluation budget, relative to the domain's range.")] = "4/255",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 4,
    attack_steps: Annotated[int, typer.Option(min=1, help="PGD steps per training example.")] = 2,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate (> 0).")] = 2e-3,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 4,
    width: Annotated[int, typer.Option(min=1, help="Purifier channels.")] = 16,
    noise: Annotated[
        float, typer.Option(help="Purifier smoothing noise std (relative, >= 0); > 0 is randomized.")
    ] = 0.0,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on at most this many samples per modality.")] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure before and after (clean, transfer, adaptive).")] = True,
    n: Annotated[int, typer.Option(min=1, help="Evaluation samples per modality (test split).")] = 100,
    steps: Annotated[int, typer.Option(min=1, help="Iterations of each evaluation attack.")] = 20,
    square_queries: Annotated[int, typer.Option(min=0, help="Queries of the Square check (0: skip).")] = 200,
    checks: Annotated[bool, typer.Option(help="Run the sanity checks on the calibrated model.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    weights: CheckpointOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Calibrate a frozen encoder on adversarial examples (backbone and semantic centers frozen), save
    OUT/config.json + OUT/model.safetensors, and report clean, transfer and adaptive robust accuracy
    before and after. Use the result with --calibration OUT on any command. Rerunning an interrupted
    command resumes it."""
    from bindguard.pipeline import CalibrationRecipe, calibrate, evaluate_calibration

    recipe = CalibrationRecipe(
        method=method,
        objective=objective,
        mode=mode,
        norm=norm,
        eps=eps,
        attack_steps=attack_steps,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        reg=reg,
        options={"rank": rank, "width": width, "noise": noise},
        seed=seed,
    )
    with progress_bars(quiet=quiet) as progress:
        calibrated = calibrate(
            model,
            data,
            recipe=recipe,
            modalities=modalities,
            limit=limit,
            out=out,
            weights=weights,
            device=device,
            progress=progress,
        )
        if not evaluate:
            console.print(f"calibration: {out} (use it with --calibration {out})")
            return
        results = evaluate_calibration(
            calibrated,
            data,
            n=n,
            steps=steps,
            square_queries=square_queries,
            checks=checks,
            seed=seed,
            out=out,
            progress=progress,
        )
    if as_json:
        output.print(json.dumps(results.to_dict(), indent=2), highlight=False, soft_wrap=True)
    else:
        for table in terminal_tables(results.to_dict(), only=("calibration",)):
            output.print(table)
    console.print(f"calibration: {out} (use it with --calibration {out}); results: {out / 'results.json'}")


@user_errors
def certify_command(
    calibration: Annotated[Path, typer.Option(help="A calibration folder with a randomized purifier (--noise > 0).")],
    modality: Annotated[str, typer.Option(help="The calibrated modality to certify.")] = "image",
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[str, typer.Option(help="Data set name or a .safetensors data file.")] = "builtin",
    weights: CheckpointOption = None,
    n: Annotated[int, typer.Option(min=1, help="Test samples to certify.")] = 100,
    draws: Annotated[int, typer.Option(min=8, help="Noise draws per sample for the bound.")] = 256,
    alpha: Annotated[float, typer.Option(help="Failure probability of each certificate, in (0, 0.5].")] = 0.001,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Certified L2 radius per sample of a randomized-smoothing calibration (Cohen et al. 2019), and
    certified accuracy at several radii, in the raw input's units."""
    from bindguard.pipeline import certify_samples

    summary = certify_samples(
        model, calibration, data, modality=modality, n=n, draws=draws, alpha=alpha, weights=weights, device=device
    )
    curve = summary["curve"]
    if as_json:
        output.print_json(data=summary)
        return
    from rich.table import Table

    table = Table(
        title=f"certified {summary['modality']} top-1, sigma {summary['sigma']:.4g}, {draws} draws, alpha {alpha}"
    )
    table.add_column("L2 radius", justify="right")
    table.add_column("certified top-1 %", justify="right")
    for point in curve:
        table.add_row(f"{point['radius']:.4g}", f"{100 * point['certified_top1']:.1f}")
    table.caption = (
        f"n={summary['n']}, abstained {summary['abstained']}; radius 0 = accuracy of the smoothed classifier"
    )
    output.print(table)
