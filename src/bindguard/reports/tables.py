"""Result rows as tables: one ``Table`` per view, written out as CSV, Markdown or HTML."""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, replace

from bindguard.reports import rows as kinds
from bindguard.reports.rows import format_eps, interval, percent


@dataclass(frozen=True)
class Table:
    """A titled grid of already-formatted cells.

    ``flags`` holds each row's sanity flags; rows with any are highlighted wherever the table is shown.
    """

    title: str
    columns: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    flags: tuple[tuple[str, ...], ...]
    caption: str = ""
    text_columns: int = 1  # the leading columns are labels (left-aligned); the rest are numbers

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def _folded(table: Table, foldable: tuple[str, ...]) -> Table:
    """Move columns whose value is the same in every row into the caption, so the varying ones fit on screen."""
    constant = [
        index
        for index, name in enumerate(table.columns)
        if name in foldable and len({row[index] for row in table.cells}) == 1 and len(table.cells) > 1
    ]
    if not constant:
        return table
    keep = [index for index in range(len(table.columns)) if index not in constant]
    shared = "; ".join(f"{table.columns[index]}: {table.cells[0][index]}" for index in constant)
    return replace(
        table,
        columns=tuple(table.columns[index] for index in keep),
        cells=tuple(tuple(row[index] for index in keep) for row in table.cells),
        caption=f"All rows: {shared}. {table.caption}",
        text_columns=table.text_columns - sum(1 for index in constant if index < table.text_columns),
    )


def _flag_cell(flags: list[str]) -> str:
    return "⚠ " + ", ".join(flags) if flags else "ok"


def _retrieval(rows: list[dict], query: str, gallery: str) -> str:
    row = next((r for r in rows if r.get("query") == query and r.get("gallery") == gallery), None)
    if row is None:
        return "–"
    return " / ".join(percent(row.get(f"recall@{k}")) for k in (1, 5, 10))


def clean_table(rows: list[dict]) -> Table | None:
    clean = kinds.of_kind(rows, "clean")
    if not clean:
        return None
    retrieval = [r for r in kinds.of_kind(rows, "retrieval") if r.get("level") not in ("instance", "caption")]
    cells = tuple(
        (
            row["modality"],
            str(row["n"]),
            percent(row["top1"]),
            interval(row.get("top1_ci95")),
            percent(row["top5"]),
            _retrieval(retrieval, "text", row["modality"]),
            _retrieval(retrieval, row["modality"], "text"),
        )
        for row in clean
    )
    return Table(
        title="Clean accuracy",
        columns=("modality", "n", "top-1 %", "95% CI", "top-5 %", "text→x R@1/5/10 %", "x→text R@1/5/10 %"),
        cells=cells,
        flags=tuple(() for _ in cells),
        caption="Zero-shot classification against the frozen text semantic centers; Wilson 95% interval of top-1.",
    )


def _budget(row: dict) -> str:
    absolute = row.get("eps_abs")
    relative = format_eps(row["eps"], row["norm"])
    return relative if absolute is None else f"{relative} ({absolute:.3g})"


def robust_table(rows: list[dict]) -> Table | None:
    robust = kinds.of_kind(rows, "robust")
    if not robust:
        return None
    cells = tuple(
        (
            row["modality"],
            row["attack"],
            "adaptive" if row.get("adaptive", True) else "transfer",
            row["norm"],
            str(row.get("steps", "–")),
            str(row.get("square_queries", "–")),
            _budget(row),
            str(row["n"]),
            f"{percent(row['clean_top1'])} → {percent(row['top1'])}",
            interval(row["top1_ci95"]),
            f"{percent(row.get('clean_top5'))} → {percent(row.get('top5'))}",
            "–" if row.get("max_norm") is None else f"{row['max_norm']:.3g}",
            _flag_cell(row.get("flags", [])),
        )
        for row in robust
    )
    attack_lists = {", ".join(row.get("attacks", [])) for row in robust} - {""}
    members = f" Ensemble members: {'; '.join(sorted(attack_lists))}." if attack_lists else ""
    notes = sorted({note for row in robust for note in row.get("notes") or []})
    members += f" Notes: {'; '.join(notes)}." if notes else ""
    table = Table(
        title="Under attack",
        columns=(
            "modality",
            "attack",
            "mode",
            "norm",
            "steps",
            "Square queries",
            "ε (absolute)",
            "n",
            "top-1 % clean → robust",
            "robust 95% CI",
            "top-5 % clean → robust",
            "max ‖δ‖",
            "flags",
        ),
        cells=cells,
        flags=tuple(tuple(row.get("flags", [])) for row in robust),
        caption="Robust: per-sample worst case over the ensemble, attacked end to end. ε is relative to each "
        "modality's input range, the absolute budget in the modality's own units follows in brackets; max ‖δ‖ is "
        "the largest perturbation found." + members,
        text_columns=4,
    )
    return _folded(table, ("attack", "mode", "norm", "steps", "Square queries"))


def calibration_table(rows: list[dict]) -> Table | None:
    calibration = kinds.of_kind(rows, "calibration")
    if not calibration:
        return None
    cells = []
    for row in calibration:
        before, after = row["before"], row["after"]
        parameters = row.get("trainable_parameters")
        fraction = row.get("trainable_fraction")
        trainable = "–" if parameters is None else f"{parameters:,}"
        if fraction is not None:
            trainable += f" ({100 * fraction:.2g}%)"
        seconds = row.get("train_seconds")
        cells.append(
            (
                row["modality"],
                row["method"] + (f" (recipe {row['recipe']})" if row.get("recipe") else ""),
                str(row.get("objective", "–")),
                str(row.get("mode", "–")),
                str(row.get("attack", "–")),
                row["norm"],
                str(row.get("steps", "–")),
                _budget(row),
                str(row.get("n", "–")),
                f"{percent(before['clean_top1'])} → {percent(after['clean_top1'])}",
                percent(after.get("transfer_top1")),
                f"{percent(before['robust_top1'])} → {percent(after['robust_top1'])}",
                f"{percent(before.get('robust_top5'))} → {percent(after.get('robust_top5'))}",
                _partner(row.get("instance_recall@1")),
                trainable,
                "–" if seconds is None else f"{seconds:.0f}",
                _flag_cell(row.get("flags", [])),
            )
        )
    table = Table(
        title="Calibration before and after",
        columns=(
            "modality",
            "method",
            "objective",
            "mode",
            "attack",
            "norm",
            "steps",
            "ε (absolute)",
            "n",
            "clean top-1 % before → after",
            "transfer top-1 % after",
            "robust top-1 % before → after",
            "robust top-5 % before → after",
            "R@1 to partner % before → after",
            "trainable parameters",
            "train s",
            "flags",
        ),
        cells=tuple(cells),
        flags=tuple(tuple(row.get("flags", [])) for row in calibration),
        caption="Frozen backbone and semantic centers; only the calibration trains. Transfer attacks are computed "
        "on the frozen encoder and only bound robustness from above; robust attacks in mode 'adaptive' run end to "
        "end through the calibration and are the numbers that count. R@1 to partner: clean instance retrieval "
        "into the uncalibrated encoder's image (or depth) embeddings, whether calibrated embeddings stay in the "
        "shared space.",
        text_columns=6,
    )
    return _folded(table, ("method", "objective", "mode", "attack", "norm", "steps"))


def _partner(alignment: dict | None) -> str:
    if not alignment:
        return "–"
    return f"{percent(alignment['before'])} → {percent(alignment['after'])} ({alignment['gallery']})"


def instance_table(rows: list[dict]) -> Table | None:
    instance = [row for row in kinds.of_kind(rows, "retrieval") if row.get("level") == "instance"]
    if not instance:
        return None
    names = list(dict.fromkeys(row["query"] for row in instance))
    lookup = {(row["query"], row["gallery"]): row["recall@1"] for row in instance}
    cells = tuple(
        (query, *(percent(lookup[(query, gallery)]) if (query, gallery) in lookup else "·" for gallery in names))
        for query in names
    )
    chance = instance[0].get("chance_recall1")
    return Table(
        title="Cross-modal retrieval of the same instance",
        columns=("query ↓ / gallery →", *names),
        cells=cells,
        flags=tuple(() for _ in cells),
        caption="Recall@1 % of finding the same source sample in another modality"
        + ("" if chance is None else f" (chance {100 * chance:.2f}%)")
        + ".",
    )


def caption_table(rows: list[dict]) -> Table | None:
    """Caption retrieval per modality: clean both ways, then per budget each direction with the media side attacked."""
    caption = kinds.of_kind(rows, "caption")
    if not caption:
        return None
    cells, flags = [], []
    for modality in kinds.modalities(caption):
        own = [row for row in caption if row["modality"] == modality]
        clean = [row for row in own if row.get("attack", "none") == "none"]
        attacked = [row for row in own if row.get("attack", "none") != "none"]
        budgets = list(dict.fromkeys((row["norm"], row["eps"]) for row in attacked)) or [None]
        samples = next((r["n"] for r in clean if r.get("gallery") == "text"), None)
        for budget in budgets:
            pair = {row["gallery"]: row for row in attacked if (row["norm"], row["eps"]) == budget}
            first = next(iter(pair.values()), None)
            raised = tuple(dict.fromkeys(flag for row in pair.values() for flag in row.get("flags", [])))
            cells.append(
                (
                    modality,
                    str(samples if samples is not None else first["samples"] if first else "–"),
                    _retrieval(clean, "text", modality),
                    _retrieval(clean, modality, "text"),
                    "–" if first is None else _budget(first),
                    _under_attack(pair.get(modality)),
                    _under_attack(pair.get("text")),
                    "–" if first is None else _flag_cell(list(raised)),
                )
            )
            flags.append(raised)
    return Table(
        title="Caption retrieval",
        columns=(
            "modality",
            "n",
            "text→x R@1/5/10 %",
            "x→text R@1/5/10 %",
            "budget",
            "text→x R@1/5/10 % gallery attacked",
            "x→text R@1/5/10 % query attacked",
            "flags",
        ),
        cells=tuple(cells),
        flags=tuple(flags),
        caption="n samples; each sample's own captions are the relevant text. Under attack the media side is perturbed "
        "end to end (per-sample worst case over the run's ensemble): as the query, to push its captions off the top; "
        "as the gallery item, once for all its captions, to hide it from them while the other items stay clean.",
    )


def _under_attack(row: dict | None) -> str:
    return "–" if row is None else " / ".join(percent(row.get(f"recall@{k}")) for k in (1, 5, 10))


def results_tables(rows: list[dict]) -> dict[str, Table]:
    """Every table the rows allow, in reading order: clean, robust, captions, calibration, instance."""
    built = {
        "clean": clean_table(rows),
        "robust": robust_table(rows),
        "caption": caption_table(rows),
        "calibration": calibration_table(rows),
        "instance": instance_table(rows),
    }
    return {name: table for name, table in built.items() if table is not None}


def _flatten(row: dict, prefix: str = "") -> dict[str, object]:
    """Nested fields become dotted columns (``after.apgd-ce``), intervals two columns, lists ``a;b``."""
    flat: dict[str, object] = {}
    for key, value in row.items():
        name = prefix + key
        if isinstance(value, dict):
            flat |= _flatten(value, name + ".")
        elif key.endswith("ci95") and isinstance(value, list | tuple) and len(value) == 2:
            flat[name + "_low"], flat[name + "_high"] = value
        elif isinstance(value, list | tuple):
            flat[name] = ";".join(str(item) for item in value)
        else:
            flat[name] = value
    return flat


def to_csv(rows: list[dict]) -> str:
    """All rows, one line each, with the union of their fields as columns (blank where a row lacks one)."""
    flat = [_flatten(row) for row in rows]
    columns = list(dict.fromkeys(name for row in flat for name in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in flat)
    return buffer.getvalue()


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    align = [":---" if index < table.text_columns else "---:" for index in range(len(table.columns))]
    if table.columns[-1] == "flags":
        align[-1] = ":---"
    lines = [
        f"## {table.title}",
        "",
        "| " + " | ".join(_markdown_cell(c) for c in table.columns) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.cells]
    if table.caption:
        lines += ["", f"*{_markdown_cell(table.caption)}*"]
    return "\n".join(lines) + "\n"


def markdown_document(results: dict, tables: dict[str, Table]) -> str:
    """``results.md``: the run's identity, then every table."""
    versions = ", ".join(f"{name} {version}" for name, version in (results.get("versions") or {}).items())
    head = [
        f"# bindguard results: {results.get('model', '?')} on {results.get('data', '?')}",
        "",
        f"seed {results.get('seed', '–')} · created {results.get('created', '–')} · {versions or 'versions unknown'}",
        "",
    ]
    return "\n".join(head) + "\n".join(to_markdown(table) for table in tables.values())


def to_html(table: Table) -> str:
    """A ``<table>``; flagged rows carry class ``flagged`` and numbers class ``number``."""

    def cell(tag: str, index: int, text: str, flagged: bool = False) -> str:
        classes = []
        if index >= table.text_columns and table.columns[index] != "flags":
            classes.append("number")
        if table.columns[index] == "flags":
            classes.append("flag" if flagged else "ok")
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{attribute}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", index, name) for index, name in enumerate(table.columns))
    body = []
    for row, flags in zip(table.cells, table.flags, strict=True):
        row_class = ' class="flagged"' if flags else ""
        cells = "".join(cell("td", index, text, bool(flags)) for index, text in enumerate(row))
        body.append(f"<tr{row_class}>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (
        f'<div class="table-scroll"><table id="table-{table.anchor}">{caption}'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
