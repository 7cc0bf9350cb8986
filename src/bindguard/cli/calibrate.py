"""``bindguard calibrate``: train per-modality calibrations, then measure them before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bindguard import distributed
from bindguard.cli.options import CheckpointOption, DeviceOption, JsonOption, QuietOption
from bindguard.cli.tables import terminal_tables
from bindguard.cli.terminal import console, output, progress_bars, user_errors

DEFAULT_METHOD = "purifier+lora"
DEFAULT_OBJECTIVE = "ce"


def _list_and_exit(value: bool) -> None:
    if value:
        show_recipes()
        raise typer.Exit()


@user_errors
def calibrate_command(
    out: Annotated[Path, typer.Option(help="Calibration folder: config.json, model.safetensors, results.json.")],
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[str, typer.Option(help="Data set name (bindguard data list) with a train split.")] = "builtin",
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities, or 'all'.")] = "all",
    recipe: Annotated[
        str, typer.Option(help="A shipped recipe (--list-recipes) or a recipe JSON file; the flags below change it.")
    ] = "standard",
    list_recipes: Annotated[
        bool,
        typer.Option(
            "--list-recipes", help="List the shipped recipes and exit.", is_eager=True, callback=_list_and_exit
        ),
    ] = False,
    method: Annotated[
        str | None, typer.Option(help="purifier, floor, lora, head, residual-head, finetune, or parts joined by '+'.")
    ] = None,
    objective: Annotated[
        str | None, typer.Option(help="ce, l2, infonce, stable, distill, or clean (no adversarial examples).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="adaptive (attack the model being trained) or static (the frozen one).")
    ] = None,
    reg: Annotated[float | None, typer.Option(help="Weight of the modality-consistency regulariser (>= 0).")] = None,
    eps: Annotated[
        str | None, typer.Option(help="Training and evaluation budget, relative to the domain's range.")
    ] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the training split.")] = None,
    attack_steps: Annotated[int | None, typer.Option(min=1, help="PGD steps per training example.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2)] = None,
    learning_rate: Annotated[float | None, typer.Option(help="AdamW learning rate (> 0).")] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank.")] = None,
    width: Annotated[int | None, typer.Option(min=1, help="Purifier channels.")] = None,
    noise: Annotated[
        float | None, typer.Option(help="Purifier smoothing noise std (relative, >= 0); > 0 is randomized.")
    ] = None,
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
    from bindguard.pipeline import calibrate, evaluate_calibration
    from bindguard.training.recipe import load_recipe

    chosen = load_recipe(recipe)
    given = {
        "method": method,
        "objective": objective,
        "mode": mode,
        "norm": norm,
        "eps": eps,
        "attack_steps": attack_steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "reg": reg,
    }
    sizes = {"rank": rank, "width": width, "noise": noise}
    settings = {name: value for name, value in given.items() if value is not None} | {"seed": seed}
    if any(value is not None for value in sizes.values()):
        settings["options"] = chosen.options | {name: value for name, value in sizes.items() if value is not None}
    chosen = chosen.with_settings(**settings)
    main_rank = distributed.from_environment().main  # in a launched run, rank 0 alone prints
    with progress_bars(quiet=quiet or not main_rank) as progress:
        calibrated = calibrate(
            model,
            data,
            recipe=chosen,
            modalities=modalities,
            limit=limit,
            out=out,
            weights=weights,
            device=device,
            progress=progress,
        )
        if not evaluate:
            if main_rank:
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
    if not main_rank:
        return
    if as_json:
        output.print(json.dumps(results.to_dict(), indent=2), highlight=False, soft_wrap=True)
    else:
        for table in terminal_tables(results.to_dict(), only=("calibration",)):
            output.print(table)
    console.print(f"calibration: {out} (use it with --calibration {out}); results: {out / 'results.json'}")


def show_recipes() -> None:
    """A table of the shipped recipes: name, phases, parts and objectives, file."""
    from rich.table import Table

    from bindguard._types import Modality
    from bindguard.training.recipe import describe_recipe, read_recipe_file, shipped_recipes

    table = Table(title="calibration recipes (bindguard calibrate --recipe NAME, or a JSON file of the same form)")
    for column in ("recipe", "phases", "method", "objectives", "epochs", "file"):
        table.add_column(column)
    for name, path in sorted(shipped_recipes().items()):
        recipe = read_recipe_file(path)
        phases = ", ".join(f"{p.name} ({p.objective}, {p.eps}, {p.attack_steps} steps)" for p in recipe.schedule())
        overrides = "; ".join(f"{m}: {', '.join(sorted(o))}" for m, o in recipe.modalities.items())
        method = recipe.method + (f" (per modality: {overrides})" if overrides else "")
        epochs = str(recipe.total_epochs)
        differing = {m: recipe.for_modality(Modality(m)).total_epochs for m in recipe.modalities}
        differing = {m: e for m, e in differing.items() if e != recipe.total_epochs}
        if differing:
            epochs += f" ({'; '.join(f'{m}: {e}' for m, e in differing.items())})"
        table.add_row(name, phases, method, recipe.objectives, epochs, str(path))
        table.add_row("", describe_recipe(path), "", "", "", "", style="dim")
    output.print(table)


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
