"""Rich tables of a results file."""

from __future__ import annotations

from rich.table import Table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def results_tables(results: dict) -> list[Table]:
    """A zero-shot/retrieval table per modality, and a matrix of instance-level cross-modal Recall@1."""
    rows = results["rows"]
    title = f"{results['model']} on {results['data']} (clean)"
    summary = Table(title=title)
    for column in ("modality", "n", "top-1 %", "95% CI", "top-5 %", "text→x R@1", "x→text R@1"):
        summary.add_column(column, justify="right" if column != "modality" else "left")
    for row in rows:
        if row["task"] != "zero-shot":
            continue
        modality = row["modality"]
        text_to = next((r for r in rows if r.get("query") == "text" and r.get("gallery") == modality), {})
        to_text = next((r for r in rows if r.get("query") == modality and r.get("gallery") == "text"), {})
        low, high = row.get("top1_ci95", [None, None])
        summary.add_row(
            modality,
            str(row["n"]),
            _percent(row["top1"]),
            f"{_percent(low)}–{_percent(high)}",
            _percent(row["top5"]),
            _percent(text_to.get("recall@1")),
            _percent(to_text.get("recall@1")),
        )
    tables = [summary]
    robust = [r for r in rows if r["task"] == "zero-shot" and r["attack"] != "none" and not r.get("calibration")]
    if robust:
        tables.append(_robust_table(robust))
    instance = [r for r in rows if r.get("level") == "instance"]
    if instance:
        names = list(dict.fromkeys(r["query"] for r in instance))
        matrix = Table(title="instance-level cross-modal retrieval, Recall@1 % (query ↓, gallery →)")
        matrix.add_column("query")
        for name in names:
            matrix.add_column(name, justify="right")
        lookup = {(r["query"], r["gallery"]): r for r in instance}
        for query in names:
            matrix.add_row(
                query, *[_percent(lookup[(query, g)]["recall@1"]) if (query, g) in lookup else "·" for g in names]
            )
        chance = instance[0]["chance_recall1"]
        matrix.caption = f"chance: {100 * chance:.2f}%"
        tables.append(matrix)
    return tables


def _robust_table(rows: list[dict]) -> Table:
    first = rows[0]
    square = f", Square {first['square_queries']} queries" if first.get("square_queries") else ""
    table = Table(title=f"under attack: {first['attack']} ensemble, {first['norm']}, {first['steps']} steps{square}")
    for column, justify in (
        ("modality", "left"),
        ("eps (abs)", "right"),
        ("n", "right"),
        ("top-1 clean→robust", "right"),
        ("95% CI", "right"),
        ("top-5 clean→robust", "right"),
        ("flags", "left"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        low, high = row["top1_ci95"]
        flags = ", ".join(row.get("flags", []))
        table.add_row(
            row["modality"],
            f"{_fraction(row['eps'])} ({row['eps_abs']:.3g})",
            str(row["n"]),
            f"{_percent(row['clean_top1'])} → {_percent(row['top1'])}",
            f"{_percent(low)}–{_percent(high)}",
            f"{_percent(row['clean_top5'])} → {_percent(row['top5'])}",
            f"[bold red]⚠ {flags}[/]" if flags else "[green]ok[/]",
        )
    table.caption = "robust: per-sample worst case over the ensemble, end to end; ⚠ rows need a closer look"
    return table


def _fraction(eps: float) -> str:
    numerator = eps * 255
    return f"{round(numerator)}/255" if abs(numerator - round(numerator)) < 1e-6 else f"{eps:g}"


def calibration_table(rows: list[dict]) -> Table:
    """Before/after calibration: clean, transfer and adaptive robust top-1 per modality."""
    first = rows[0]
    square = f" + Square {first['square_queries']}" if first.get("square_queries") else ""
    methods = {f"{row['method']} {row['objective']} {row['mode']}" for row in rows}
    shared = methods.pop() if len(methods) == 1 else None
    table = Table(
        title=(
            f"calibration{f' ({shared})' if shared else ''}: {first['norm']} eps {_fraction(first['eps'])} of each "
            f"domain's range, {first['attack']} ensemble, {first['steps']} steps{square}, n={first['n']}"
        )
    )
    columns = ["modality", "eps abs"] + ([] if shared else ["method"])
    columns += ["clean", "transfer", "adaptive", "adaptive top-5", "R@1 to partner", "trainable", "flags"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("modality", "method", "flags") else "right")
    for row in rows:
        before, after = row["before"], row["after"]
        flags = ", ".join(row.get("flags", []))
        gain = after["robust_top1"] - before["robust_top1"]
        cells = [row["modality"], f"{row['eps_abs']:.3g}"]
        cells += [] if shared else [f"{row['method']} {row['objective']} {row['mode']}"]
        cells += [
            f"{_percent(before['clean_top1'])}→{_percent(after['clean_top1'])}",
            _percent(after["transfer_top1"]),
            f"{_percent(before['robust_top1'])}→{_percent(after['robust_top1'])} ({100 * gain:+.0f})",
            f"{_percent(before['robust_top5'])}→{_percent(after['robust_top5'])}",
            _alignment(row.get("instance_recall@1")),
            f"{100 * row['trainable_fraction']:.2f}%",
            f"[bold red]⚠ {flags}[/]" if flags else "[green]ok[/]",
        ]
        table.add_row(*cells)
    table.caption = (
        "top-1 % before→after; adaptive: attacked end to end through the calibration (the robustness claim); "
        "transfer: examples made on the uncalibrated encoder; R@1 to partner: clean instance retrieval into the "
        "uncalibrated encoder's image (or depth) embeddings; trainable: share of the encoder's parameters"
    )
    return table


def _alignment(alignment: dict | None) -> str:
    if not alignment:
        return "-"
    return f"{_percent(alignment['before'])}→{_percent(alignment['after'])} ({alignment['gallery']})"
