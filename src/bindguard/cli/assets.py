"""``bindguard data build`` and ``bindguard tinybind train``: rebuild what the embedded default ships."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.options import QuietOption
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
