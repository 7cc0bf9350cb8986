"""``bindguard``: attack, evaluate and repair unified multimodal encoders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.calibrate import calibrate_command, certify_command
from bindguard.cli.report import report_command
from bindguard.cli.terminal import console, output, progress_bars, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Encoders bindguard can build.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets and the built-in benchmark.")
tinybind_app = typer.Typer(no_args_is_help=True, help="The embedded default encoder.")
attacks_app = typer.Typer(no_args_is_help=True, help="Attacks bindguard can run.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(tinybind_app, name="tinybind")
app.add_typer(attacks_app, name="attacks")


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every step (epochs, losses, attack stages) to stderr.")
    ] = False,
) -> None:
    """Attack, evaluate and repair unified multimodal encoders."""
    if verbose:
        import logging

        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=True)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler], force=True)


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
CalibrationOption = Annotated[
    Path | None, typer.Option(help="A calibration folder (bindguard calibrate --out) to apply to the model.")
]


@models_app.command("list")
@user_errors
def models_list(as_json: JsonOption = False) -> None:
    """List registered encoders."""
    from bindguard.encoders import ENCODERS

    rows = [{"name": e.name, "extra": e.extra, "description": e.description} for e in ENCODERS.entries.values()]
    _print_listing(rows, as_json, "encoders")


@data_app.command("list")
@user_errors
def data_list(as_json: JsonOption = False) -> None:
    """List registered data sets."""
    from bindguard.data import DATASETS

    rows = [{"name": e.name, "extra": e.extra, "description": e.description} for e in DATASETS.entries.values()]
    _print_listing(rows, as_json, "data sets")


@attacks_app.command("list")
@user_errors
def attacks_list(as_json: JsonOption = False) -> None:
    """List registered attacks (and the 'standard' ensemble)."""
    from bindguard.attacks import ATTACKS
    from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE

    rows = [{"name": e.name, "extra": e.extra, "description": e.description} for e in ATTACKS.entries.values()]
    rows.append(
        {
            "name": "standard",
            "extra": None,
            "description": "ensemble: " + ", ".join(STANDARD_ENSEMBLE.attack_names) + " (+ Square check)",
        }
    )
    _print_listing(rows, as_json, "attacks")


def _print_listing(rows: list[dict], as_json: bool, title: str) -> None:
    if as_json:
        output.print_json(data=rows)
        return
    from rich.table import Table

    table = Table(title=title)
    for column in ("name", "extra", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["extra"] or "-", row["description"])
    output.print(table)


@data_app.command("build")
@user_errors
def data_build(
    out: Annotated[
        Path | None, typer.Option(help="Where to write the spoken-digit archive (default: the package's own asset).")
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Rebuild the spoken-digit audio of the built-in benchmark with espeak-ng (needs: apt-get install espeak-ng)."""
    from bindguard.data.builtin.benchmark import spoken_digits_path
    from bindguard.data.builtin.spoken_digits import build_spoken_digits
    from bindguard.errors import DataError

    target = out or spoken_digits_path()
    with progress_bars(quiet=quiet) as progress:
        try:
            count = build_spoken_digits(target, progress=lambda done, total: progress("synthesise", done, total))
        except RuntimeError as error:  # espeak-ng missing or failing
            raise DataError(str(error)) from error
    console.print(f"wrote {count} clips to {target}")


@tinybind_app.command("train")
@user_errors
def tinybind_train(
    out: Annotated[Path, typer.Option(help="Where to write the trained parts (.safetensors).")] = Path(
        "tinybind.safetensors"
    ),
    seed: Annotated[int, typer.Option(help="Random seed; the same seed reproduces the same weights.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 60,
    variants: Annotated[int, typer.Option(min=1, help="Renderings of the training split (augmentations).")] = 4,
    quiet: QuietOption = False,
) -> None:
    """Train TinyBind's projection heads and PointNet (frozen MiniLM and EfficientNet-Lite0)."""
    from bindguard.errors import ConfigError
    from bindguard.training.tinybind import TrainRecipe, train_tinybind

    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {out}")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path ending in .safetensors")
    started = time.perf_counter()
    with progress_bars(quiet=quiet) as progress:
        model = train_tinybind(TrainRecipe(seed=seed, epochs=epochs, variants=variants), progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_trained(out, recipe=model.recipe)
    console.print(f"wrote {out} in {time.perf_counter() - started:.0f} s; use it with --weights {out}")


@app.command("eval")
@user_errors
def evaluate(
    out: Annotated[Path, typer.Option(help="Folder for results.json.")],
    model: Annotated[str, typer.Option(help="Encoder name (bindguard models list).")] = "tinybind",
    data: Annotated[
        str, typer.Option(help="Data set name (bindguard data list) or a .safetensors data file.")
    ] = "builtin",
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities, or 'all'.")] = "all",
    n: Annotated[int | None, typer.Option(min=1, help="At most this many samples per modality.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    weights: Annotated[
        Path | None, typer.Option(help="TinyBind trained parts to use instead of the shipped ones.")
    ] = None,
    calibration: CalibrationOption = None,
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
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Evaluate zero-shot classification and retrieval, clean and (with --attacks) under attack.

    Robust rows are the per-sample worst case over the ensemble; an interrupted run resumes
    from OUT/state when the same command is run again.
    """
    robust = _robust_settings(attacks, eps, norm, steps, square_queries, checks, batch_size, seed)
    results = _run_evaluation(
        out=out,
        model=model,
        data=data,
        modalities=modalities,
        n=n,
        batch_size=batch_size,
        seed=seed,
        weights=weights,
        quiet=quiet,
        robust=robust,
        calibration=calibration,
    )
    _show(results, as_json)
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
    weights: Annotated[Path | None, typer.Option(help="TinyBind trained parts to use.")] = None,
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attack a few samples and save clean and adversarial inputs for inspection."""

    from bindguard._types import Modality
    from bindguard.attacks import ThreatModel, create_attack
    from bindguard.data import load_dataset
    from bindguard.encoders import create_encoder
    from bindguard.errors import ConfigError
    from bindguard.evaluation.examples import attack_examples, write_examples

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a folder path")
    chosen = Modality.parse(modality)
    threat = ThreatModel.parse(norm, eps)
    options = {"queries": steps} if attack_name == "square" else ({} if attack_name == "fgsm" else {"steps": steps})
    attacker = create_attack(attack_name, threat=threat, seed=seed, **options)
    encoder = create_encoder(model, calibration=calibration, **({"weights": weights} if weights else {}))
    if getattr(encoder, "randomized", False):
        from bindguard.encoders.expectation import ExpectationEncoder

        encoder = ExpectationEncoder(encoder)  # EOT: attack the expected embedding of a randomized model
    encoder.check_modality(chosen)
    target = Modality.parse(target_modality) if attack_name == "cross-modal" else None
    benchmark = load_dataset(data, split="test", modalities=[chosen] + ([target] if target else []), limit=n)
    tensors, outcome = attack_examples(encoder, benchmark, chosen, attacker, target_modality=target)
    summary = {"model": model, "calibration": str(calibration) if calibration else None, "data": data}
    summary |= outcome | {"attack": attack_name, "steps": steps, "seed": seed}
    path = write_examples(out, tensors, summary)
    batch = benchmark.data[chosen]
    clean_prediction, adversarial_prediction = tensors["clean_prediction"], tensors["adversarial_prediction"]
    result_norms = tensors["norms"]
    if as_json:
        output.print_json(data=summary | {"file": str(path)})
        return
    from rich.table import Table

    table = Table(title=f"{attack_name} on {model} {chosen.value}, {threat}, {steps} steps")
    for column in ("sample", "label", "clean", "adversarial", "‖δ‖"):
        table.add_column(column, justify="right")
    names = benchmark.class_names
    for index in range(len(batch)):
        fooled = int(adversarial_prediction[index]) != int(batch.labels[index])
        table.add_row(
            str(index),
            names[int(batch.labels[index])],
            names[int(clean_prediction[index])],
            f"[red]{names[int(adversarial_prediction[index])]}[/]"
            if fooled
            else names[int(adversarial_prediction[index])],
            f"{float(result_norms[index]):.4g}",
        )
    output.print(table)
    console.print(f"saved {path} (clean, adversarial, labels, predictions, norms)")


app.command("calibrate")(calibrate_command)
app.command("certify")(certify_command)
app.command("report")(report_command)


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
    """The main job on the embedded default, TinyBind on the built-in benchmark, all six modalities:
    clean evaluation, the standard attack ensemble at 1/255, 2/255 and 4/255 (Linf), calibration of
    every modality with the default method at 4/255, evaluation after it (transfer and adaptive),
    and a report (OUT/report.html). Rerunning an interrupted demo resumes it."""
    from bindguard.cli.calibrate import run_calibration
    from bindguard.evaluation.results import write_results
    from bindguard.training.calibrate import CalibrationRecipe

    started = time.perf_counter()
    robust = _robust_settings(
        "standard",
        "1/255,2/255,4/255",
        "linf",
        5 if quick else 10,
        20 if quick else 100,
        True,
        64,
        0,
        check_samples=4 if quick else 8,
    )
    samples = 16 if quick else 60
    results = _run_evaluation(
        out=out,
        model="tinybind",
        data="builtin",
        modalities="all",
        n=samples,
        batch_size=64,
        seed=0,
        weights=None,
        quiet=quiet,
        robust=robust,
    )
    _save_demo_examples(out / "examples", quick=quick)
    # a shortened run of the default recipe; `bindguard calibrate` trains the full one
    recipe = CalibrationRecipe(epochs=1 if quick else DEMO_EPOCHS)
    calibration = run_calibration(
        out=out / "calibration",
        model="tinybind",
        data="builtin",
        modalities="all",
        recipe=recipe,
        limit=64 if quick else DEMO_TRAIN_SAMPLES,
        evaluation={
            "n": samples,
            "steps": 5 if quick else 10,
            "square_queries": 20 if quick else 100,
            "checks": True,
        },
        weights=None,
        quiet=quiet,
        check_samples=4 if quick else 8,
    )
    results["rows"] += calibration["rows"]
    results["settings"]["calibration"] = calibration["settings"]
    write_results(out, results)
    from bindguard.reports import build_report

    with progress_bars(quiet=quiet) as progress:
        report = build_report(out, progress=progress)
    _show(results, as_json)
    if not as_json:
        from bindguard.cli.calibrate import show_calibration

        show_calibration(calibration, False)
        console.print(
            f"The demo calibrates with a shortened recipe ({1 if quick else DEMO_EPOCHS} epoch(s) on "
            f"{64 if quick else DEMO_TRAIN_SAMPLES} samples per modality) to fit in minutes; it is far from what the "
            "full recipe reaches. `bindguard calibrate --out CAL` (about 11 minutes of training on 2 cores) gains 40 to 56 points "
            "of adaptive robust top-1 at 4/255 on image, video, depth and thermal (see the README).",
            highlight=False,
        )
    console.print(
        f"demo finished in {time.perf_counter() - started:.0f} s; report: {report.resolve().as_uri()}",
        highlight=False,
        soft_wrap=True,
    )


DEMO_EPOCHS = 2
DEMO_TRAIN_SAMPLES = 384


def _save_demo_examples(directory: Path, *, quick: bool) -> None:
    """A few APGD-CE examples per modality at 4/255 for the report's pictures."""
    from bindguard._types import PERCEPTUAL_MODALITIES
    from bindguard.attacks import ThreatModel, create_attack
    from bindguard.data import load_dataset
    from bindguard.encoders import create_encoder
    from bindguard.evaluation.examples import attack_examples, write_examples

    encoder = create_encoder("tinybind")
    benchmark = load_dataset("builtin", split="test", limit=3)
    attack = create_attack("apgd-ce", threat=ThreatModel.linf("4/255"), steps=5 if quick else 20)
    for modality in PERCEPTUAL_MODALITIES:
        tensors, summary = attack_examples(encoder, benchmark, modality, attack)
        write_examples(directory, tensors, summary | {"model": "tinybind", "steps": attack.steps})


def _run_evaluation(
    *,
    out: Path,
    model: str,
    data: str,
    modalities: str,
    n: int | None,
    batch_size: int,
    seed: int,
    weights: Path | None,
    quiet: bool,
    robust: tuple | None = None,
    calibration: Path | None = None,
) -> dict:
    import torch

    from bindguard._types import PERCEPTUAL_MODALITIES, parse_modalities
    from bindguard.data import DATASETS, load_dataset
    from bindguard.encoders import ENCODERS, create_encoder
    from bindguard.errors import ConfigError, DataError
    from bindguard.evaluation.clean import evaluate_clean
    from bindguard.evaluation.results import make_results, write_results

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a folder path")
    ENCODERS.get(model)  # fail on unknown names before any slow work
    if not data.endswith(".safetensors"):
        DATASETS.get(data)
    chosen = parse_modalities(modalities, available=PERCEPTUAL_MODALITIES)
    torch.manual_seed(seed)
    options = {"weights": weights} if weights is not None else {}
    with progress_bars(quiet=quiet) as progress:
        encoder = create_encoder(model, calibration=calibration, **options)
        if getattr(encoder, "randomized", False):
            from bindguard.encoders.expectation import ExpectationEncoder

            encoder = ExpectationEncoder(encoder)  # EOT: attack the expected embedding of a randomized model
        chosen = parse_modalities(
            [m.value for m in chosen], available=tuple(m for m in encoder.modalities if m in PERCEPTUAL_MODALITIES)
        )
        benchmark = load_dataset(data, split="test", modalities=chosen, limit=n)
        absent = [m.value for m in chosen if m not in benchmark.data]
        if absent and modalities.strip().lower() != "all":
            raise DataError(
                f"data {data!r} has no {', '.join(absent)} samples; choose from: {', '.join(m.value for m in benchmark.modalities)}"
            )
        chosen = [m for m in chosen if m in benchmark.data]
        rows = evaluate_clean(encoder, benchmark, modalities=chosen, batch_size=batch_size, progress=progress)
        if robust is not None:
            from bindguard.evaluation.robust import evaluate_robust

            threats, settings = robust
            run_config = {
                "model": model,
                "weights": str(weights),
                "data": data,
                "n": n,
                "calibration": str(calibration),
            }
            rows += evaluate_robust(
                encoder,
                benchmark,
                threats,
                modalities=chosen,
                settings=settings,
                state_directory=out / "state",
                run_config=run_config,
                progress=progress,
            )
    settings = {
        "robust": None
        if robust is None
        else {
            "ensemble": robust[1].ensemble.name,
            "attacks": robust[1].ensemble.attack_names,
            "steps": robust[1].steps,
            "square_queries": robust[1].square_queries,
            "checks": robust[1].checks,
            "threats": [str(t) for t in robust[0]],
        },
        "modalities": [m.value for m in chosen],
        "n": n,
        "split": "test",
        "weights": str(weights) if weights else "shipped",
        "calibration": str(calibration) if calibration else None,
    }
    results = make_results(model=model, data=data, seed=seed, rows=rows, settings=settings)
    write_results(out, results)
    return results


def _robust_settings(
    attacks: str | None,
    eps: str,
    norm: str,
    steps: int,
    square_queries: int,
    checks: bool,
    batch_size: int,
    seed: int,
    *,
    check_samples: int = 32,
) -> tuple | None:
    """Parse the attack options up front, so bad values fail before any slow work."""
    if attacks is None:
        return None
    from bindguard.attacks import ThreatModel
    from bindguard.errors import ConfigError
    from bindguard.evaluation.ensemble import parse_ensemble
    from bindguard.evaluation.robust import RobustSettings

    ensemble = parse_ensemble(attacks)
    budgets = [part for part in eps.split(",") if part.strip()]
    if not budgets:
        raise ConfigError("--eps is empty; give budgets such as 1/255,2/255,4/255")
    threats = [ThreatModel.parse(norm, budget) for budget in budgets]
    for member in ensemble.members:
        member.build(threats[0], steps=max(steps, 2), seed=seed)  # unsupported norms fail here, by name
    settings = RobustSettings(
        ensemble=ensemble,
        steps=steps,
        square_queries=square_queries,
        checks=checks,
        check_samples=check_samples,
        batch_size=batch_size,
        seed=seed,
    )
    return threats, settings


def _show(results: dict, as_json: bool) -> None:
    if as_json:
        output.print(json.dumps(results, indent=2), highlight=False, soft_wrap=True)
        return
    from bindguard.cli.tables import results_tables

    for table in results_tables(results):
        output.print(table)


def run() -> None:
    """Console-script entry point."""
    # OpenMP threads that spin while waiting starve each other on a busy machine (a forward+backward
    # measured 20x slower on 2 shared cores); passive waiting costs little when the machine is idle.
    # It must be set before torch loads, which the commands do lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="bindguard")


if __name__ == "__main__":
    run()
