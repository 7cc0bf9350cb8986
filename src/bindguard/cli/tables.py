"""The report's tables (``bindguard.reports.tables``) drawn in the terminal with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table as RichTable

from bindguard.reports.rows import format_eps

if TYPE_CHECKING:
    from bindguard.pipeline import AttackedSamples
from bindguard.reports.tables import Table, results_tables


def rich_table(table: Table) -> RichTable:
    """One report table as a rich table; flagged rows are marked in red, clean ones in green."""
    drawn = RichTable(title=table.title, caption=table.caption or None, caption_justify="left")
    for index, column in enumerate(table.columns):
        left = index < table.text_columns or column == "flags"
        drawn.add_column(column, justify="left" if left else "right", overflow="fold")  # never cut a flag short
    for cells, flags in zip(table.cells, table.flags, strict=True):
        styled = []
        for column, cell in zip(table.columns, cells, strict=True):
            text = escape(cell)
            if column == "flags":
                text = f"[bold red]{text}[/]" if flags else f"[green]{text}[/]"
            styled.append(text)
        drawn.add_row(*styled)
    return drawn


def terminal_tables(results: dict, *, only: tuple[str, ...] | None = None) -> list[RichTable]:
    """Every table the rows allow (clean, robust, calibration, instance), or those named in ``only``."""
    tables = results_tables(results["rows"])
    return [rich_table(table) for name, table in tables.items() if only is None or name in only]


def attack_table(attacked: AttackedSamples) -> RichTable:
    """Per sample: label, clean and adversarial prediction (red when fooled), achieved norm."""
    summary, tensors, names = attacked.summary, attacked.tensors, attacked.class_names
    drawn = RichTable(
        title=f"{summary['attack']} on {summary['model']} {summary['modality']}, {summary['norm']} eps "
        f"{format_eps(summary['eps'], summary['norm'])} ({summary['eps_abs']:.3g} absolute), {summary['steps']} steps"
    )
    for column in ("sample", "label", "clean", "adversarial", "‖δ‖"):
        drawn.add_column(column, justify="right")
    labels, clean, adversarial = tensors["labels"], tensors["clean_prediction"], tensors["adversarial_prediction"]
    for index in range(len(labels)):
        predicted = escape(names[int(adversarial[index])])
        fooled = int(adversarial[index]) != int(labels[index])
        drawn.add_row(
            str(index),
            escape(names[int(labels[index])]),
            escape(names[int(clean[index])]),
            f"[red]{predicted}[/]" if fooled else predicted,
            f"{float(tensors['norms'][index]):.4g}",
        )
    return drawn
