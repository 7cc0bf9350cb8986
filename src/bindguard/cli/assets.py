"""``bindguard data build``, ``data prepare`` and ``tinybind train``: build data and what the embedded default ships."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.options import CheckpointOption, QuietOption, SkipBadFilesOption, TemplatesOption
from bindguard.cli.terminal import console, progress_bars, user_errors


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


@user_errors
def data_prepare(
    name: Annotated[str, typer.Argument(help="A data set read from files (bindguard data list).")],
    data_root: Annotated[Path, typer.Option(help="The folder of its files, in its published layout.")],
    out: Annotated[Path, typer.Option(help="The cache folder (shards + manifest.json); evaluate with --data OUT.")],
    model: Annotated[str, typer.Option(help="The encoder whose input sizes the data is decoded to.")] = "tinybind",
    weights: CheckpointOption = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    n: Annotated[
        int | None, typer.Option(min=1, help="At most this many samples (taken from the classes in turns).")
    ] = None,
    skip_bad_files: SkipBadFilesOption = False,
    templates: TemplatesOption = None,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard file.")] = 1024,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Prepare anew even if the cache exists.")] = False,
) -> None:
    """Decode a data set once into safetensors shards with a manifest (file hashes, counts, settings);
    evaluation then streams from it. Rerunning is a no-op when nothing changed. Python: bindguard.prepare_data(...)."""
    from bindguard.pipeline import prepare_data

    started = time.perf_counter()
    prepared = prepare_data(
        name, data_root=data_root, out=out, model=model, weights=weights, split=split, n=n,
        skip_bad_files=skip_bad_files, templates=templates, shard_size=shard_size, rebuild=rebuild,
    )  # fmt: skip
    manifest = prepared.manifest
    what = f"{manifest['count']} {manifest['modality']} samples of {name} ({manifest['split']}) in {len(manifest['shards'])} shard(s)"
    if prepared.written:
        console.print(f"prepared {what} in {time.perf_counter() - started:.0f} s: {out}; evaluate with --data {out}")
    else:
        console.print(f"up to date: {what}, every source file unchanged: {out}")


@user_errors
def tinybind_train(
    out: Annotated[Path, typer.Option(help="Where to write the trained parts (.safetensors).")] = Path(
        "tinybind.safetensors"
    ),
    seed: Annotated[int, typer.Option(help="Random seed; the same seed reproduces the same weights.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 60,
    variants: Annotated[int, typer.Option(min=1, help="Renderings of the training split (augmentations).")] = 4,
    bind_event_to: Annotated[
        str | None,
        typer.Option(
            help="Instead: bind an event head to these trained parts ('shipped': the packaged ones) and write "
            "the head alone to --out (the packaged tinybind-event.safetensors is made so)."
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Train TinyBind's projection heads and PointNet (frozen MiniLM and EfficientNet-Lite0)."""
    from bindguard.errors import ConfigError
    from bindguard.training.tinybind import TrainRecipe, bind_event_file, train_tinybind

    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {out}")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path ending in .safetensors")
    started = time.perf_counter()
    recipe = TrainRecipe(seed=seed, epochs=epochs, variants=variants)
    out.parent.mkdir(parents=True, exist_ok=True)
    if bind_event_to is not None:
        parts = None if bind_event_to == "shipped" else Path(bind_event_to)
        with progress_bars(quiet=quiet) as progress:
            bind_event_file(parts, out, recipe, progress=progress)
        console.print(f"wrote the event head {out} in {time.perf_counter() - started:.0f} s")
        return
    with progress_bars(quiet=quiet) as progress:
        model = train_tinybind(recipe, progress=progress)
    model.save_trained(out, recipe=model.recipe)
    console.print(f"wrote {out} in {time.perf_counter() - started:.0f} s; use it with --weights {out}")
