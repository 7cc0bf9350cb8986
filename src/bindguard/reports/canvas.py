"""The one door to matplotlib: figures drawn off-screen (Agg) with the report's style, returned as PNG bytes.

Figures are built with the object API rather than pyplot, so rendering a report neither changes the
caller's backend nor leaves figures open.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from bindguard._optional import require

DPI = 110

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "figure.titlesize": 12,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# Colours shared across plots so the same thing looks the same everywhere.
WORST_CASE = "#111111"
FLAG = "#d62728"


def render(draw: Callable[[Any], None], *, width: float, height: float) -> bytes:
    """Call ``draw(figure)`` on a fresh figure of ``width`` x ``height`` inches and return it as PNG.

    Raises:
        MissingDependencyError: when matplotlib is not installed (``bindguard[plots]``).
    """
    matplotlib = require("matplotlib", extra="plots")
    figure_module = require("matplotlib.figure", extra="plots")
    agg = require("matplotlib.backends.backend_agg", extra="plots")
    with matplotlib.rc_context(STYLE):
        figure = figure_module.Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        agg.FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
