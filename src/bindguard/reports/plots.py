"""Result plots: robust accuracy against the budget, and calibration before and after."""

from __future__ import annotations

import math
from typing import Any

from bindguard._statistics import wilson
from bindguard.reports import rows as kinds
from bindguard.reports.canvas import FLAG, WORST_CASE, render
from bindguard.reports.rows import format_eps, slug, stage_labels

# tab10 without its red and grey, which mean "sanity flag" and "worst case" here.
STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
CLEAN_COLOUR = "#f2b400"
PANEL_COLUMNS = 3


def robust_plots(rows: list[dict]) -> dict[str, bytes]:
    """One small-multiples figure per (norm, attack, mode): ``{"robust-linf.png": png, ...}``."""
    groups: dict[tuple, list[dict]] = {}
    for row in kinds.of_kind(rows, "robust"):
        mode = "adaptive" if row.get("adaptive", True) else "transfer"
        groups.setdefault((row["norm"], row["attack"], mode), []).append(row)
    plots = {}
    for (norm, attack, mode), members in groups.items():
        name = slug("robust", norm) if len(groups) == 1 else slug("robust", norm, attack, mode)
        plots[f"{name}.png"] = _robust_figure(members, norm=norm, attack=attack, mode=mode)
    return plots


def _robust_figure(rows: list[dict], *, norm: str, attack: str, mode: str) -> bytes:
    names = kinds.modalities(rows)
    columns = min(PANEL_COLUMNS, len(names))
    lines = math.ceil(len(names) / columns)

    def draw(figure: Any) -> None:
        axes = figure.subplots(lines, columns, squeeze=False, sharey=True)
        legend: dict[str, Any] = {}
        for index, axis in enumerate(axes.flat):
            if index >= len(names):
                axis.set_visible(False)
                continue
            _robust_panel(axis, [row for row in rows if row["modality"] == names[index]], norm=norm)
            if index % columns == 0:
                axis.set_ylabel("zero-shot top-1 accuracy (%)")
            if index // columns == lines - 1 or index + columns >= len(names):
                axis.set_xlabel(_eps_axis_label(norm))
            handles, labels = axis.get_legend_handles_labels()
            legend |= {label: handle for label, handle in zip(labels, handles, strict=True) if label not in legend}
        figure.suptitle(f"Robust zero-shot top-1 vs budget: '{attack}' ({mode}, {norm}), per-sample worst case")
        figure.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 5))

    return render(draw, width=4.1 * columns + 0.4, height=3.1 * lines + 1.3)


def _eps_axis_label(norm: str) -> str:
    if norm == "linf":
        return "ε, Linf budget (fraction of the input range, k/255)"
    return f"ε, {norm} budget (relative to the input range)"


def _robust_panel(axis: Any, rows: list[dict], *, norm: str) -> None:
    rows = sorted(rows, key=lambda row: row["eps"])
    first = rows[0]
    clean, n = first["clean_top1"], first["n"]
    x = [0.0] + [row["eps"] for row in rows]

    def percent(values: list[float | None]) -> list[float]:
        return [math.nan if value is None else 100 * value for value in values]

    low = [wilson(clean, n)[0]] + [row["top1_ci95"][0] for row in rows]
    high = [wilson(clean, n)[1]] + [row["top1_ci95"][1] for row in rows]
    axis.fill_between(x, percent(low), percent(high), color=WORST_CASE, alpha=0.13, linewidth=0, label="95% interval")
    worst = [clean] + [row["top1"] for row in rows]
    axis.plot(x, percent(worst), color=WORST_CASE, linewidth=3.4, label="worst case (reported)", zorder=2)
    stages = list(dict.fromkeys(stage for row in rows for stage in row.get("after", {})))
    for index, (stage, label) in enumerate(zip(stages, stage_labels(stages), strict=True)):
        values = [clean] + [row.get("after", {}).get(stage) for row in rows]
        colour = STAGE_COLOURS[index % len(STAGE_COLOURS)]
        axis.plot(x, percent(values), color=colour, linewidth=1.2, marker="o", markersize=3.5, label=label, zorder=3)
    axis.plot(
        [0.0], [100 * clean], marker="*", markersize=13, color=CLEAN_COLOUR, markeredgecolor=WORST_CASE,
        linestyle="none", label="clean (ε = 0)", zorder=4,
    )  # fmt: skip
    for row in rows:
        if row.get("flags"):
            point = (row["eps"], 100 * row["top1"])
            axis.plot(*point, marker="X", markersize=10, color=FLAG, linestyle="none", label="sanity flag", zorder=5)
            axis.annotate(
                "⚠ " + ", ".join(row["flags"]), point, xytext=(-4, 9), textcoords="offset points",
                color=FLAG, fontsize=7.5, ha="right",
            )  # fmt: skip
    axis.set_xticks(x, [format_eps(value, norm) for value in x])
    axis.set_ylim(-4, 106)
    axis.set_xlim(-0.04 * x[-1], x[-1] * 1.06)
    ratio = first["eps_abs"] / first["eps"] if first["eps"] else 1.0
    units = "" if math.isclose(ratio, 1.0) else f"; absolute ε = {ratio:.3g} × ε"
    axis.set_title(f"{first['modality']} (n = {n}{units})")


# (label, part of the row, field, colour, hatch): the order a reader compares them in.
BARS = (
    ("clean before", "before", "clean_top1", "#9ecae1", None),
    ("clean after", "after", "clean_top1", "#2171b5", None),
    ("transfer robust after", "after", "transfer_top1", "#fdae6b", "//"),
    ("{mode} robust before", "before", "robust_top1", "#fc9272", None),
    ("{mode} robust after", "after", "robust_top1", "#a50f15", None),
)


def calibration_plots(rows: list[dict]) -> dict[str, bytes]:
    """One grouped bar chart per calibration setting: ``{"calibration-<method>-....png": png}``."""
    groups: dict[tuple, list[dict]] = {}
    for row in kinds.of_kind(rows, "calibration"):
        key = (row["method"], row.get("objective"), row.get("mode", "adaptive"), row["norm"], row["eps"])
        groups.setdefault(key, []).append(row)
    plots = {}
    for (method, objective, mode, norm, eps), members in groups.items():
        name = slug("calibration", method, objective, mode, norm, format_eps(eps, norm).replace("/", "-"))
        plots[f"{name}.png"] = _calibration_figure(members, method, objective, mode, norm, eps)
    return plots


def _calibration_figure(
    rows: list[dict], method: str, objective: str | None, mode: str, norm: str, eps: float
) -> bytes:
    names = kinds.modalities(rows)
    by_modality = {row["modality"]: row for row in rows}
    width = 0.16

    def draw(figure: Any) -> None:
        axis = figure.subplots()
        for index, (label, part, field, colour, hatch) in enumerate(BARS):
            values = [by_modality[name][part].get(field) for name in names]
            positions = [position + (index - 2) * width for position in range(len(names))]
            heights = [math.nan if value is None else 100 * value for value in values]
            bars = axis.bar(
                positions, heights, width, label=label.format(mode=mode), color=colour, hatch=hatch,
                edgecolor="white" if hatch is None else "#7f4000", linewidth=0.6,
            )  # fmt: skip
            axis.bar_label(bars, labels=["n/a" if v is None else f"{100 * v:.0f}" for v in values], fontsize=7)
        axis.set_xticks(range(len(names)), names)
        axis.set_ylim(0, 112)
        axis.set_ylabel("zero-shot top-1 accuracy (%)")
        axis.set_xlabel("modality")
        axis.grid(axis="x", visible=False)
        described = method + (f", objective {objective}" if objective else "")
        samples = ", ".join(sorted({str(row.get("n", "?")) for row in rows}))
        axis.set_title(
            f"Calibration ({described}): before and after, {norm} ε = {format_eps(eps, norm)}, n = {samples}\n"
            f"hatched: transfer attack on the frozen encoder (not a robustness claim); {mode}: attacked end to end",
            fontsize=9.5,
        )
        figure.legend(loc="outside lower center", ncols=len(BARS))

    return render(draw, width=max(6.5, 1.25 * len(names) + 2.5), height=4.4)
