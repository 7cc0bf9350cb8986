"""``bindguard``: attack, evaluate and repair unified multimodal encoders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bindguard import distributed
from bindguard._openmp import choose_wait_policy
from bindguard.cli.assets import data_build, data_prepare, tinybind_train
from bindguard.cli.calibrate import calibrate_command, certify_command
from bindguard.cli.convert import convert_command
from bindguard.cli.listing import attacks_list, data_list, models_list
from bindguard.cli.options import (
    CalibrationOption,
    CheckpointOption,
    DataRootOption,
    DeviceOption,
    JsonOption,
    QuietOption,
    SkipBadFilesOption,
    TemplatesOption,
)
from bindguard.cli.report import report_command
from bindguard.cli.tables import attack_table, terminal_tables
from bindguard.cli.terminal import OneLineErrors, console, fail, output, progress_bars, user_errors
from bindguard.cli.terminal import settings as terminal_settings

if TYPE_CHECKING:
    from bindguard.pipeline.cost import CostEstimate

app = typer.Typer(
    cls=OneLineErrors, add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False
)
models_app = typer.Typer(no_args_is_help=True, help="Encoders bindguard can build.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets and the built-in benchmark.")
tinybind_app = typer.Typer(no_args_is_help=True, help="The embedded default encoder.")
attacks_app = typer.Typer(no_args_is_help=True, help="Attacks bindguard can run.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(tinybind_app, name="tinybind")
app.add_typer(attacks_app, name="attacks")
models_app.command("list")(models_list)
data_app.command("list")(data_list)
attacks_app.command("list")(attacks_list)
data_app.command("build")(data_build)
data_app.command("prepare")(data_prepare)
tinybind_app.command("train")(tinybind_train)


#: The commands that share their work among the processes of a launcher (torchrun).
DISTRIBUTED_COMMANDS = ("eval", "calibrate")


@app.callback()
def main(
    context: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every step (epochs, losses, attack stages) to stderr.")
    ] = False,
) -> None:
    """Attack, evaluate and repair unified multimodal encoders."""
    terminal_settings["verbose"] = verbose
    if distributed.launched() and context.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise fail(
            f"bindguard {context.invoked_subcommand} runs in one process, but a launcher started "
            f"{distributed.from_environment().size}; run it without torchrun "
            f"(commands that run on several: {', '.join(DISTRIBUTED_COMMANDS)})"
        )
    if verbose:
        import logging

        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=True)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler], force=True)


@app.command("eval")
@user_errors
def evaluate(
    out: Annotated[Path, typer.Option(help="Folder for results.json.")],
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[
        str, typer.Option(help="Data set name (bindguard data list) or a .safetensors data file.")
    ] = "builtin",
    data_root: DataRootOption = None,
    skip_bad_files: SkipBadFilesOption = False,
    templates: TemplatesOption = None,
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities, or 'all'.")] = "all",
    n: Annotated[int | None, typer.Option(min=1, help="At most this many samples per modality.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    weights: CheckpointOption = None,
    calibration: CalibrationOption = None,
    centers: Annotated[
        Path | None,
        typer.Option(help="Class centers (C, K, D) to score against instead of prompt templates (convert --centers)."),
    ] = None,
    center_rule: Annotated[
        str, typer.Option(help="With --centers: nearest (class of the top-1 center) or mean (each class's mean).")
    ] = "nearest",
    attacks: Annotated[
        str | None,
        typer.Option(help="'standard' or comma-separated attack names (bindguard attacks list); none: clean only."),
    ] = None,
    eps: Annotated[
        str, typer.Option(help="Comma-separated budgets relative to each domain's range, e.g. 1/255,2/255,4/255.")
    ] = "1/255,2/255,4/255",
    norm: Annotated[str, typer.Option(help="Threat norm: linf or l2.")] = "linf",
    steps: Annotated[int, typer.Option(min=1, help="Iterations of each gradient attack.")] = 100,
    square_queries: Annotated[int, typer.Option(min=0, help="Queries of the Square black-box check (0: skip).")] = 1000,
    checks: Annotated[
        bool, typer.Option(help="Run the sanity checks (more steps, large eps, gradients, determinism).")
    ] = True,
    device: DeviceOption = None,
    precision: Annotated[
        str,
        typer.Option(
            help="float32, or bfloat16 for the attack iterations (decisions re-made in float32, flagged if they differ)."
        ),
    ] = "float32",
    estimate: Annotated[
        bool,
        typer.Option("--estimate", help="Print the run's predicted wall time and exit; nothing runs or is written."),
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Evaluate zero-shot classification and retrieval, clean and (with --attacks) under attack.

    Robust rows are the per-sample worst case over the ensemble; an interrupted run resumes
    from OUT/state when the same command is run again. Python: bindguard.evaluate(...).
    """
    from bindguard.pipeline import evaluate as run_evaluation

    if estimate:
        from bindguard.pipeline import estimate as estimate_run

        predicted = estimate_run(
            model, data, data_root=data_root, skip_bad_files=skip_bad_files, templates=templates, attacks=attacks, eps=eps, norm=norm, n=n, modalities=modalities, steps=steps,
            square_queries=square_queries, checks=checks, batch_size=batch_size, weights=weights,
            calibration=calibration, device=device,
        )  # fmt: skip
        show_estimate(predicted, as_json)
        return
    main_rank = distributed.from_environment().main  # in a launched run, rank 0 alone prints
    with progress_bars(quiet=quiet or not main_rank) as progress:
        results = run_evaluation(
            model,
            data,
            data_root=data_root,
            skip_bad_files=skip_bad_files,
            templates=templates,
            attacks=attacks,
            eps=eps,
            norm=norm,
            n=n,
            modalities=modalities,
            steps=steps,
            square_queries=square_queries,
            checks=checks,
            batch_size=batch_size,
            seed=seed,
            weights=weights,
            calibration=calibration,
            centers=centers,
            center_rule=center_rule,
            device=device,
            precision=precision,
            out=out,
            progress=progress,
        )
    if not main_rank:
        return
    show_results(results.to_dict(), as_json)
    console.print(f"results: {out / 'results.json'}")


@app.command("attack")
@user_errors
def attack(
    out: Annotated[Path, typer.Option(help="Folder for adversarial-<modality>.safetensors.")],
    modality: Annotated[str, typer.Option(help="Modality to attack.")] = "image",
    attack_name: Annotated[str, typer.Option("--attack", help="Attack name (bindguard attacks list).")] = "apgd-ce",
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[str, typer.Option(help="Data set name or a .safetensors data file.")] = "builtin",
    eps: Annotated[str, typer.Option(help="Budget relative to the domain's range, e.g. 4/255.")] = "4/255",
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    steps: Annotated[int, typer.Option(min=1, help="Iterations (gradient attacks) or queries (square).")] = 50,
    n: Annotated[int, typer.Option(min=1, help="Samples to attack.")] = 8,
    target_modality: Annotated[
        str, typer.Option(help="cross-modal attack: the modality whose embeddings are the targets.")
    ] = "audio",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    weights: CheckpointOption = None,
    calibration: CalibrationOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attack a few samples and save clean and adversarial inputs for inspection. Python: bindguard.attack_samples(...)."""
    from bindguard.pipeline import attack_samples

    attacked = attack_samples(
        model,
        data,
        modality=modality,
        attack=attack_name,
        eps=eps,
        norm=norm,
        steps=steps,
        n=n,
        target_modality=target_modality,
        seed=seed,
        weights=weights,
        calibration=calibration,
        device=device,
        out=out,
    )
    if as_json:
        output.print_json(data=attacked.summary | {"file": str(attacked.path)})
        return
    output.print(attack_table(attacked))
    console.print(f"saved {attacked.path} (clean, adversarial, labels, predictions, norms)")


app.command("calibrate")(calibrate_command)
app.command("certify")(certify_command)
app.command("report")(report_command)
app.command("convert")(convert_command)


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's results and report.")] = Path("bindguard-demo"),
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller run (16 samples per modality, fewer steps and epochs).")
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """The main job on the embedded default, TinyBind on the built-in benchmark, all seven modalities:
    clean evaluation, the standard attack ensemble at 1/255, 2/255 and 4/255 (Linf), the shipped
    calibration (--calibration shipped) measured before and after (clean, transfer, adaptive), and a
    report (OUT/report.html); --quick also trains a short calibration to show the training loop.
    Rerunning an interrupted demo resumes it. Python: bindguard.run_demo(...)."""
    from bindguard.pipeline import run_demo

    started = time.perf_counter()
    with progress_bars(quiet=quiet) as progress:
        outcome = run_demo(out, quick=quick, progress=progress)
    show_results(outcome.results.to_dict(), as_json)
    if not as_json:
        recipe = outcome.calibration.settings.get("recipe", {})
        console.print(
            f"The calibration table measures the calibration that ships with TinyBind (recipe {recipe.get('name')!r}; "
            f"bindguard calibrate --recipe {recipe.get('name')} --seed {recipe.get('seed')} --out CAL reproduces it "
            "bit for bit on the kind of CPU that trained it). It is evaluated here with the "
            f"demo's small budget ({outcome.plan.samples} samples, {outcome.plan.steps} steps); the README gives "
            "its figures at the full budget and the command that made them.",
            highlight=False,
        )
        if outcome.training_loop is not None:
            loop = outcome.training_loop.settings
            console.print(
                f"--quick also trained a short calibration ({outcome.plan.calibration_epochs} epoch on "
                f"{outcome.plan.calibration_samples} samples per modality) to show the training loop; it is not a "
                f"robustness claim. Its rows: {loop.get('calibration')}/results.json",
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"demo finished in {time.perf_counter() - started:.0f} s; report: {outcome.report.resolve().as_uri()}",
        highlight=False,
        soft_wrap=True,
    )


def show_estimate(predicted: CostEstimate, as_json: bool) -> None:
    """The table of ``bindguard eval --estimate``: per modality, the timed pass and the passes counted."""
    if as_json:
        output.print_json(
            data={"rows": predicted.rows, "processes": predicted.processes, "least_seconds": predicted.least_seconds,
                  "most_seconds": predicted.most_seconds}
        )  # fmt: skip
        return
    from rich.table import Table

    table = Table(title="predicted wall time (nothing was run or written)")
    for column in ("modality", "samples", "ms per sample pass", "passes per sample", "check passes", "predicted"):
        table.add_column(column, justify="left" if column == "modality" else "right")
    for row in predicted.rows:
        table.add_row(
            row["modality"],
            str(row["samples"]),
            f"{1000 * row['seconds_per_pass']:.2f}",
            f"{row['passes_least']:.0f}-{row['passes_most']:.0f}",
            f"{row['check_passes']:.0f}",
            f"{_duration(row['least_seconds'])} - {_duration(row['most_seconds'])}",
        )
    table.caption = (
        f"least: every sample broken by the first attack; most: every sample robust to the end; "
        f"{predicted.processes} process(es); one batch per modality timed on this machine"
    )
    output.print(table)
    console.print(
        f"predicted: {_duration(predicted.least_seconds)} to {_duration(predicted.most_seconds)}", highlight=False
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show_results(results: dict, as_json: bool) -> None:
    if as_json:
        output.print(json.dumps(results, indent=2), highlight=False, soft_wrap=True)
        return
    for table in terminal_tables(results):
        output.print(table)


def run() -> None:
    """Console-script entry point."""
    # Spinning OpenMP threads are fastest on idle cores and collapse on shared ones; the choice must
    # be made before torch loads, which the commands do lazily (see bindguard._openmp).
    choose_wait_policy()
    app(prog_name="bindguard")


if __name__ == "__main__":
    run()
