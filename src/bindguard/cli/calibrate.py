"""``bindguard calibrate``: train per-modality calibrations, then measure them before and after."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

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
    reg: Annotated[float, typer.Option(min=0, help="Weight of the modality-consistency regulariser.")] = 1.0,
    eps: Annotated[str, typer.Option(help="Training and evaluation budget, relative to the domain's range.")] = "4/255",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 4,
    attack_steps: Annotated[int, typer.Option(min=1, help="PGD steps per training example.")] = 2,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 2e-3,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 4,
    width: Annotated[int, typer.Option(min=1, help="Purifier channels.")] = 16,
    noise: Annotated[
        float, typer.Option(min=0.0, help="Purifier smoothing noise std (relative); > 0 is randomized.")
    ] = 0.0,
    limit: Annotated[int | None, typer.Option(min=2, help="Train on at most this many samples per modality.")] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure before and after (clean, transfer, adaptive).")] = True,
    n: Annotated[int, typer.Option(min=1, help="Evaluation samples per modality (test split).")] = 100,
    steps: Annotated[int, typer.Option(min=1, help="Iterations of each evaluation attack.")] = 20,
    square_queries: Annotated[int, typer.Option(min=0, help="Queries of the Square check (0: skip).")] = 200,
    checks: Annotated[bool, typer.Option(help="Run the sanity checks on the calibrated model.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    weights: Annotated[Path | None, typer.Option(help="TinyBind trained parts to use.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Calibrate a frozen encoder on adversarial examples (backbone and semantic centers frozen), save
    OUT/config.json + OUT/model.safetensors, and report clean, transfer and adaptive robust accuracy
    before and after. Use the result with --calibration OUT on any command. Rerunning an interrupted
    command resumes it."""
    from bindguard.training.calibrate import CalibrationRecipe

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
    results = run_calibration(
        out=out,
        model=model,
        data=data,
        modalities=modalities,
        recipe=recipe,
        limit=limit,
        evaluation={"n": n, "steps": steps, "square_queries": square_queries, "checks": checks} if evaluate else None,
        weights=weights,
        quiet=quiet,
    )
    show_calibration(results, as_json)
    console.print(f"calibration: {out} (use it with --calibration {out}); results: {out / 'results.json'}")


def run_calibration(
    *,
    out: Path,
    model: str,
    data: str,
    modalities: str,
    recipe,
    limit: int | None,
    evaluation: dict | None,
    weights: Path | None,
    quiet: bool,
    check_samples: int = 16,
) -> dict:
    """Train, save and (optionally) evaluate; returns the results written to OUT/results.json."""
    import torch

    from bindguard._types import PERCEPTUAL_MODALITIES, Modality, parse_modalities
    from bindguard.data import DATASETS, load_dataset
    from bindguard.encoders import ENCODERS, create_encoder
    from bindguard.errors import ConfigError
    from bindguard.evaluation.results import make_results, write_results
    from bindguard.training.calibrate import calibrate_modalities

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a folder path")
    recipe.check()
    ENCODERS.get(model)
    DATASETS.get(data)
    chosen = parse_modalities(modalities, available=PERCEPTUAL_MODALITIES)
    settings = None
    if evaluation is not None:
        from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
        from bindguard.evaluation.robust import RobustSettings

        settings = RobustSettings(
            ensemble=STANDARD_ENSEMBLE,
            steps=evaluation["steps"],
            square_queries=evaluation["square_queries"],
            checks=evaluation["checks"],
            check_samples=check_samples,
            batch_size=64,
            seed=recipe.seed,
        )
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    rows: list[dict] = []
    with progress_bars(quiet=quiet) as progress:
        base = create_encoder(model, **({"weights": weights} if weights else {}))
        chosen = [m for m in chosen if m in base.modalities]
        train = load_dataset(data, split="train", modalities=chosen, limit=limit)
        calibrated = calibrate_modalities(base, train, chosen, recipe, out, progress=progress)
        if settings is not None:
            from bindguard.evaluation.calibration import evaluate_calibration

            # image and depth come along as galleries for the instance-retrieval alignment check
            partners = (
                [m for m in (Modality.IMAGE, Modality.DEPTH) if m not in chosen] if data in DATASETS.names() else []
            )
            test = load_dataset(data, split="test", modalities=chosen + partners, limit=evaluation["n"])
            calibration_rows, robust_rows = evaluate_calibration(
                base,
                calibrated,
                test,
                recipe.threat,
                settings=settings,
                modalities=chosen,
                state_directory=out / "state",
                run_config={"model": model, "data": data, "calibration": str(out), "recipe": str(recipe)},
                progress=progress,
            )
            rows += calibration_rows + [row | {"calibration": str(out)} for row in robust_rows]
    results = make_results(
        model=model,
        data=data,
        seed=recipe.seed,
        rows=rows,
        settings={
            "calibration": str(out),
            "recipe": {k: v for k, v in vars(recipe).items()},
            "train_limit": limit,
            "evaluation": evaluation,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    write_results(out, results)
    return results


def show_calibration(results: dict, as_json: bool) -> None:
    import json

    if as_json:
        output.print(json.dumps(results, indent=2), highlight=False, soft_wrap=True)
        return
    from bindguard.cli.tables import calibration_table

    rows = [row for row in results["rows"] if row["task"] == "calibration"]
    if rows:
        output.print(calibration_table(rows))


@user_errors
def certify_command(
    calibration: Annotated[Path, typer.Option(help="A calibration folder with a randomized purifier (--noise > 0).")],
    modality: Annotated[str, typer.Option(help="The calibrated modality to certify.")] = "image",
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[str, typer.Option(help="Data set name or a .safetensors data file.")] = "builtin",
    n: Annotated[int, typer.Option(min=1, help="Test samples to certify.")] = 100,
    draws: Annotated[int, typer.Option(min=8, help="Noise draws per sample for the bound.")] = 256,
    alpha: Annotated[float, typer.Option(min=1e-9, max=0.5, help="Failure probability of each certificate.")] = 0.001,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Certified L2 radius per sample of a randomized-smoothing calibration (Cohen et al. 2019), and
    certified accuracy at several radii, in the raw input's units."""

    from bindguard._types import Modality
    from bindguard.data import load_dataset
    from bindguard.encoders import create_encoder
    from bindguard.encoders.centers import semantic_centers
    from bindguard.evaluation.certify import certify

    chosen = Modality.parse(modality)
    encoder = create_encoder(model, calibration=calibration)
    encoder.check_modality(chosen)
    benchmark = load_dataset(data, split="test", modalities=[chosen], limit=n)
    batch = benchmark.data[chosen]
    centers = semantic_centers(encoder, benchmark.class_names, benchmark.templates[chosen])
    certificate = certify(encoder, chosen, batch.inputs, centers, n=draws, alpha=alpha)
    correct = certificate.prediction == batch.labels
    largest = float(certificate.radius.max())
    radii = sorted({0.0, *(largest * f for f in (0.25, 0.5, 0.75, 1.0))})
    curve = [
        {"radius": r, "certified_top1": float((correct & (certificate.radius >= r)).float().mean())} for r in radii
    ]
    summary = {
        "modality": chosen.value,
        "n": len(batch),
        "sigma": certificate.sigma,
        "draws": draws,
        "alpha": alpha,
        "abstained": int((certificate.prediction < 0).sum()),
        "mean_radius_correct": float(certificate.radius[correct].mean()) if correct.any() else 0.0,
        "curve": curve,
    }
    if as_json:
        output.print_json(data=summary | {"radius": certificate.radius.tolist()})
        return
    from rich.table import Table

    table = Table(title=f"certified {chosen.value} top-1, sigma {certificate.sigma:.4g}, {draws} draws, alpha {alpha}")
    table.add_column("L2 radius", justify="right")
    table.add_column("certified top-1 %", justify="right")
    for point in curve:
        table.add_row(f"{point['radius']:.4g}", f"{100 * point['certified_top1']:.1f}")
    table.caption = f"n={len(batch)}, abstained {summary['abstained']}; radius 0 = accuracy of the smoothed classifier"
    output.print(table)
