"""``bindguard``: attack, evaluate and repair unified multimodal encoders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.terminal import console, output, progress_bars, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Encoders bindguard can build.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets and the built-in benchmark.")
tinybind_app = typer.Typer(no_args_is_help=True, help="The embedded default encoder.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(tinybind_app, name="tinybind")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


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
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Evaluate zero-shot classification and retrieval, clean."""
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
    )
    _show(results, as_json)
    console.print(f"results: {out / 'results.json'}")


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's results.")] = Path("bindguard-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A smaller run (100 samples per modality).")] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """The main job on the embedded default: TinyBind on the built-in benchmark, all six modalities."""
    started = time.perf_counter()
    results = _run_evaluation(
        out=out,
        model="tinybind",
        data="builtin",
        modalities="all",
        n=100 if quick else None,
        batch_size=128,
        seed=0,
        weights=None,
        quiet=quiet,
    )
    _show(results, as_json)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; results: {out / 'results.json'}")


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
        encoder = create_encoder(model, **options)
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
    settings = {
        "modalities": [m.value for m in chosen],
        "n": n,
        "split": "test",
        "weights": str(weights) if weights else "shipped",
    }
    results = make_results(model=model, data=data, seed=seed, rows=rows, settings=settings)
    write_results(out, results)
    return results


def _show(results: dict, as_json: bool) -> None:
    if as_json:
        output.print(json.dumps(results, indent=2), highlight=False, soft_wrap=True)
        return
    from bindguard.cli.tables import results_tables

    for table in results_tables(results):
        output.print(table)


def run() -> None:
    """Console-script entry point."""
    app(prog_name="bindguard")


if __name__ == "__main__":
    run()
