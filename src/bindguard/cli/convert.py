"""``bindguard convert``: an upstream checkpoint (or UniBind class-centres pickle) to one safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.terminal import output, user_errors


@user_errors
def convert_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .pth/.pt/.bin/.safetensors file, or a folder holding one weights file.")
    ],
    out: Annotated[Path, typer.Argument(help="The .safetensors file to write (replaced atomically).")],
    strip_prefix: Annotated[
        list[str],
        typer.Option(help="Key prefix to remove, repeatable; --strip-prefix '' keeps every key as it is."),
    ] = ["backbone.bind."],  # noqa: B006 - typer reads the default list; it is never mutated
    centers: Annotated[
        bool, typer.Option("--centers", help="CHECKPOINT is a UniBind {label: tensor(K, D)} class-centres pickle.")
    ] = False,
) -> None:
    """Convert a checkpoint to safetensors without running any code from it: torch.save files are read
    with weights_only=True and plain pickles by a tensors-only unpickler. A `module.` prefix on every key
    (DistributedDataParallel) is always removed; a file that needs more than tensors is refused."""
    if centers:
        from bindguard.encoders.class_centers import import_unibind_centers

        imported = import_unibind_centers(checkpoint, out)
        output.print(
            f"converted {checkpoint}: {imported.num_classes} classes x {imported.per_class} centers of "
            f"dimension {imported.dim} -> {out}",
            highlight=False,
            soft_wrap=True,
        )
        return
    from bindguard.encoders.checkpoints import convert_to_safetensors

    converted = convert_to_safetensors(
        checkpoint, out, strip_prefixes=tuple(prefix for prefix in strip_prefix if prefix)
    )
    output.print(
        f"converted {checkpoint}: {converted.tensors} tensors, {converted.parameters:,} values -> {converted.path}",
        highlight=False,
        soft_wrap=True,
    )
