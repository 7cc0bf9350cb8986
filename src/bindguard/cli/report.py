"""``bindguard report DIR``: a results folder turned into report.html, results.csv, results.md and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindguard.cli.terminal import console, output, progress_bars, user_errors


@user_errors
def report_command(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Results folder holding results.json (and examples/*.safetensors, if any)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the written files as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Write a self-contained report.html (tables, plots, sanity flags, example perturbations), results.csv
    and results.md into DIR. Nothing is written unless all of it can be."""
    from bindguard.reports import render_report, write_report

    with progress_bars(quiet=quiet) as progress:
        files = render_report(directory, progress=progress)
    written = write_report(directory, files)
    report = directory / "report.html"
    if as_json:
        output.print_json(data={"report": str(report), "files": [str(path) for path in written]})
        return
    plots = sum(1 for path in written if path.parent.name == "plots")
    console.print(f"wrote report.html, results.csv, results.md and {plots} plot(s) to {directory}")
    output.print(f"report: {report.resolve().as_uri()}", highlight=False, soft_wrap=True)
