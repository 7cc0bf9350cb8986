"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(
        help="A calibration folder (bindguard calibrate --out) to apply to the model, or 'shipped' for the one "
        "that ships with TinyBind."
    ),
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda when available, else cpu).")]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "--weights",
        help="The encoder's weights: a checkpoint file or folder (TinyBind: trained parts instead of the shipped ones).",
    ),
]
DataRootOption = Annotated[
    Path | None,
    typer.Option(help="The folder of a data set read from files, in its published layout (bindguard data list)."),
]
SkipBadFilesOption = Annotated[
    bool,
    typer.Option(
        "--skip-bad-files", help="Leave unreadable files of such a data set out (counted) instead of stopping."
    ),
]
TemplatesOption = Annotated[
    Path | None,
    typer.Option(help='Prompt templates per modality for such a data set, JSON: {"image": ["a photo of a {}."]}.'),
]
