"""Reports: a results folder turned into tables, plots and a self-contained HTML page.

This layer only reads result files; it never builds a model or runs an attack, so a report can be
made on any machine that has the folder (matplotlib comes with ``bindguard[plots]``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bindguard._io import atomic_write_bytes
from bindguard.errors import DataError
from bindguard.evaluation.results import read_results

Progress = Callable[[str, int, int], None]

ROBUST_CAPTION = (
    "One panel per modality. Thin lines: the worst case after each attack stage in turn (each sample counts as "
    "robust only if every stage so far failed on it); bold: the reported worst case over the whole ensemble; "
    "shaded: its 95% Wilson interval; star: clean accuracy; red cross: a row with sanity flags."
)
CALIBRATION_CAPTION = (
    "Zero-shot top-1 per modality before and after calibration. Transfer attacks (hatched) are computed on the "
    "frozen encoder and overstate robustness; adaptive attacks run through the calibration and are what counts."
)


def render_report(directory: str | Path, *, progress: Progress | None = None) -> dict[str, bytes]:
    """Everything ``build_report`` writes, as ``{path relative to directory: contents}``, without writing.

    Rendering all of it before writing anything means bad input leaves the folder untouched.

    Args:
        directory: a results folder holding ``results.json`` and optionally ``examples/*.safetensors``.
        progress: optional ``callback(stage, done, total)``.

    Raises:
        DataError: for a missing folder, a missing or corrupt results file, or a corrupt example file.
        MissingDependencyError: when matplotlib is not installed.
    """
    from bindguard.reports.examples import find_examples, load_example
    from bindguard.reports.html import Picture, report_html
    from bindguard.reports.pictures import describe, example_picture
    from bindguard.reports.plots import calibration_plots, robust_plots
    from bindguard.reports.rows import check_rows, modalities
    from bindguard.reports.tables import markdown_document, results_tables, to_csv

    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"no results folder at {directory}; fix: run bindguard eval --out {directory} first")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a folder; give the folder that holds results.json")
    results = read_results(directory)
    rows = check_rows(results["rows"], str(directory / "results.json"))
    examples = [load_example(path) for path in find_examples(directory)]  # fail on a bad file before drawing
    order = modalities(row for row in rows if "modality" in row)
    examples.sort(key=lambda example: order.index(example.modality) if example.modality in order else len(order))
    report = progress or (lambda stage, done, total: None)
    total = 2 + len(examples)
    report("plots", 0, total)
    pictures = [Picture(name, png, ROBUST_CAPTION) for name, png in robust_plots(rows).items()]
    report("plots", 1, total)
    pictures += [Picture(name, png, CALIBRATION_CAPTION) for name, png in calibration_plots(rows).items()]
    report("plots", 2, total)
    for done, example in enumerate(examples, start=3):
        name = f"example-{example.modality}.png"
        pictures.append(Picture(name, example_picture(example), describe(example), example))
        report("plots", done, total)
    tables = results_tables(rows)
    files = {f"plots/{picture.name}": picture.png for picture in pictures}
    files["results.csv"] = to_csv(rows).encode("utf-8")
    files["results.md"] = markdown_document(results, tables).encode("utf-8")
    files["report.html"] = report_html(results, tables, pictures).encode("utf-8")
    return files


def write_report(directory: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``render_report``'s files atomically (each appears whole or not at all); the report page last."""
    order = sorted(files, key=lambda name: name == "report.html")
    written = []
    for name in order:
        path = Path(directory) / name
        atomic_write_bytes(path, files[name])
        written.append(path)
    return written


def build_report(directory: str | Path, *, progress: Progress | None = None) -> Path:
    """Write ``report.html``, ``results.csv``, ``results.md`` and ``plots/*.png`` into a results folder.

    Raises:
        DataError: see ``render_report``.

    Returns:
        The path of ``report.html``.
    """
    write_report(directory, render_report(directory, progress=progress))
    return Path(directory) / "report.html"


__all__ = ["build_report", "render_report", "write_report"]
