"""``bindguard models|data|attacks list``: what bindguard can build, load and run."""

from __future__ import annotations

from bindguard.cli.options import JsonOption
from bindguard.cli.terminal import output, user_errors


@user_errors
def models_list(as_json: JsonOption = False) -> None:
    """List registered encoders."""
    from bindguard.encoders import ENCODERS

    rows = [{"name": e.name, "extra": e.extra, "description": e.description} for e in ENCODERS.entries.values()]
    _print_listing(rows, as_json, "encoders")


@user_errors
def data_list(as_json: JsonOption = False) -> None:
    """List registered data sets."""
    from bindguard.data import DATASETS

    rows = [{"name": e.name, "extra": e.extra, "description": e.description} for e in DATASETS.entries.values()]
    _print_listing(rows, as_json, "data sets")


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
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in ("name", "extra", "description"):
        table.add_column(column)
    for row in rows:  # descriptions show layouts such as ROOT/[train/]CLASS/: text, not markup
        table.add_row(escape(row["name"]), row["extra"] or "-", escape(row["description"]))
    output.print(table)
