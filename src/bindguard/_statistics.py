"""The Wilson score interval, in one place for the evaluation (which has torch) and the reports (which need none)."""

from __future__ import annotations

import math


def wilson(proportion: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion of ``total`` (well behaved near 0 and 1, unlike the normal one)."""
    if total <= 0:
        return (0.0, 1.0)
    denominator = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / denominator
    half = z * math.sqrt(proportion * (1 - proportion) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))
