"""Event streams (neuromorphic cameras): the raw event list, and the event tensor that attacks perturb.

An event camera reports, per pixel, each time its log intensity has changed by a contrast
threshold since the pixel's last event: (x, y, t, p), p the sign of the change. Encoders take a
fixed-size tensor made from the list by one documented step, ``events_to_tensor``:

1. **Space.** The sensor's centred region of the tensor's aspect ratio is kept (events outside it
   are dropped, as a centre crop drops pixels) and scaled to H x W: an event lands in cell
   ``(floor(y' * H / h), floor(x' * W / w))`` of that region. Not differentiable (positions are integers).
2. **Time.** The sample's span [t_min, t_max] is mapped to [0, T - 1]; an event at tau adds
   ``1 - |tau - b|`` to the two nearest of the T bins b (the voxel grid of Zhu et al. 2019 and
   E2VID). Differentiable in t and in per-event weights.
3. **Polarity.** ON events (p > 0) go to channel 0, OFF events to channel 1.
4. **Density.** Counts are divided by the sample's 99th percentile of non-zero counts (at least 1)
   and clamped to 1 (``event_density``), so a sample's busiest cells saturate whatever the sensor's
   resolution or the recording's length.

The result, (T, 2, H, W) in [0, 1], is the raw domain: attacks perturb event densities (a
continuous relaxation of counts, as attacks on voxel grids do), under the same relative budget as
intensities. Adding or removing events moves densities by multiples of 1 / that percentile.
"""

from __future__ import annotations

import numpy as np
import torch

from bindguard._types import Modality
from bindguard.errors import DataError
from bindguard.modalities.base import InputSpec

EVENT_AXES = ("T", "C", "H", "W")
POLARITIES = 2
DENSITY_QUANTILE = 0.99


def event_spec(bins: int, height: int, width: int) -> InputSpec:
    """Event tensors, (B, T, 2, H, W): per time bin, ON and OFF event densities in [0, 1]."""
    return InputSpec(
        Modality.EVENT,
        "B,T,2,H,W",
        (bins, POLARITIES, height, width),
        (0.0, 1.0),
        "event density (count / the sample's 99th-percentile count)",
        grid_axes=EVENT_AXES,
        purifier="pixels",
    )


def time_weights(tau: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear ("tent") weights of positions ``tau`` in [0, bins - 1]: (lower bin, its weight, the upper's).

    The upper bin is ``lower + 1`` (clamped to the last bin, where its weight is 0).
    """
    tau = tau.clamp(0, bins - 1)
    lower = tau.floor().long().clamp(max=bins - 1)
    upper_weight = tau - lower
    return lower, 1.0 - upper_weight, upper_weight


def event_density(counts: torch.Tensor) -> torch.Tensor:
    """(..., T, 2, H, W) counts of one sample -> densities in [0, 1] (see the module docstring, step 4)."""
    nonzero = counts[counts > 0]
    scale = torch.quantile(nonzero.float(), DENSITY_QUANTILE).clamp(min=1.0) if nonzero.numel() else counts.new_ones(())
    return (counts / scale).clamp(0.0, 1.0)


def events_to_tensor(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    t: np.ndarray | torch.Tensor,
    p: np.ndarray | torch.Tensor,
    *,
    sensor_size: tuple[int, int],
    bins: int,
    height: int,
    width: int,
    source: str = "events",
) -> torch.Tensor:
    """One recording's event list -> its (bins, 2, height, width) tensor in [0, 1] (the module docstring's steps).

    Args:
        x, y: pixel columns and rows on the sensor, integers in [0, width) and [0, height).
        t: timestamps, any unit (only their span matters).
        p: polarities: True/1 for ON, False/0 or -1 for OFF.
        sensor_size: (height, width) of the sensor in pixels.
        bins, height, width: the tensor's time bins and size.
        source: named in errors (a file path).

    Raises:
        DataError: for no events, lists of different lengths, or coordinates off the sensor.
    """
    x, y, t, p = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in (x, y, t, p))
    count = x.numel()
    if not count:
        raise DataError(f"{source} holds no events; an event recording needs at least one")
    if not y.numel() == t.numel() == p.numel() == count:
        raise DataError(
            f"{source}: x, y, t and p have different lengths ({count}, {y.numel()}, {t.numel()}, {p.numel()})"
        )
    sensor_height, sensor_width = sensor_size
    x, y = x.reshape(-1).long(), y.reshape(-1).long()
    if bool((x < 0).any() or (x >= sensor_width).any() or (y < 0).any() or (y >= sensor_height).any()):
        raise DataError(
            f"{source}: event coordinates fall outside the {sensor_width} x {sensor_height} sensor "
            f"(x {int(x.min())}..{int(x.max())}, y {int(y.min())}..{int(y.max())}); fix: give its sensor size"
        )
    # step 1: the centred region of the tensor's aspect ratio, scaled to height x width
    region_width = min(sensor_width, sensor_height * width / height)
    region_height = min(sensor_height, sensor_width * height / width)
    left, top = (sensor_width - region_width) / 2, (sensor_height - region_height) / 2
    columns = torch.floor((x.double() - left) * width / region_width).long()
    rows = torch.floor((y.double() - top) * height / region_height).long()
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    # step 2: the span mapped onto the bins
    t = t.reshape(-1).double()
    span = float(t.max() - t.min())
    tau = (t - t.min()) / span * (bins - 1) if span > 0 else torch.full_like(t, (bins - 1) / 2)
    lower, lower_weight, upper_weight = time_weights(tau, bins)
    upper = (lower + 1).clamp(max=bins - 1)
    # step 3: polarity channels
    channel = (p.reshape(-1).float() <= 0).long()  # ON -> 0, OFF -> 1
    counts = torch.zeros(bins * POLARITIES * height * width, dtype=torch.float64)
    cell = (channel * height + rows) * width + columns
    for bin_index, weight in ((lower, lower_weight), (upper, upper_weight)):
        flat = bin_index * (POLARITIES * height * width) + cell
        counts.index_add_(0, flat[inside], weight[inside])
    return event_density(counts.view(bins, POLARITIES, height, width)).float()
