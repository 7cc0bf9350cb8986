"""Perturbation pictures: what the attack changed, drawn in each modality's own form."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bindguard.reports.canvas import FLAG, render
from bindguard.reports.examples import Example
from bindguard.reports.rows import format_eps
from bindguard.reports.spectrogram import N_MELS, band_centres, log_mel

COLOURMAPS = {"depth": "viridis", "thermal": "inferno"}
UNITS = {"depth": "normalised disparity", "thermal": "thermal intensity"}
DIFFERENCE_MAP = "RdBu_r"
MAX_FRAMES = 6
ZOOM_MS = 20


# What to look for in each picture, shown under it in the report.
DESCRIPTIONS = {
    "pixels": "Rows: the first samples. Columns: the clean input, the adversarial input (its title turns red when "
    "the prediction changed), and the difference adversarial − clean{amplified}.",
    "video": "For each sample: the clean frames, the adversarial frames (label red when the prediction changed) "
    "and the difference, amplified so its largest change fills the colour range (mid-grey = unchanged).",
    "audio": "For each sample: waveforms (top, one amplitude scale, with a zoom into the difference) and log-mel "
    "spectrograms (bottom) of the clean clip, the adversarial clip and the difference; the players below play "
    "the first sample.",
    "event": "For each sample and time bin: the clean events, the adversarial events (label red when the prediction "
    "changed), as ON minus OFF density (red ON, blue OFF, white none), and the difference of each polarity's "
    "densities summed, adversarial − clean, on its own blue–red scale.",
    "point": "For each sample: the clean cloud, and the adversarial cloud coloured by how far each point moved "
    "(‖δ‖₂), with arrows from each clean point to its adversarial position (lengthened as stated).",
}


def describe(example: Example) -> str:
    """One sentence on how to read ``example_picture(example)``."""
    if example.modality in ("image", "depth", "thermal"):
        amplified = (
            ", amplified so its largest change fills the range (mid-grey = unchanged)"
            if example.clean.shape[1] == 3
            else " on a blue–red scale (white = unchanged)"
        )
        return DESCRIPTIONS["pixels"].format(amplified=amplified)
    return DESCRIPTIONS[example.modality]


def example_picture(example: Example) -> bytes:
    """PNG of the first samples of an example file: clean, adversarial and their difference."""
    draw = {
        "image": _pixels,
        "depth": _pixels,
        "thermal": _pixels,
        "video": _video,
        "audio": _audio,
        "point": _points,
        "event": _events,
    }[example.modality]
    return draw(example)


def headline(example: Example) -> str:
    meta = example.metadata
    norm = meta.get("norm", "linf")
    budget = "" if example.eps is None else f", {norm} ε = {format_eps(example.eps, norm)}"
    if example.eps_abs is not None:
        budget += f" (absolute {example.eps_abs:.3g})"
    return f"{example.modality}: {meta.get('attack', 'attack')}{budget}"


def _predictions(example: Example, index: int) -> tuple[str, str, bool]:
    """('label 3 → 3', '→ 8', fooled) for one sample; blanks where the file has no predictions."""
    if example.labels is None or example.clean_prediction is None or example.adversarial_prediction is None:
        return "", "", False
    label = int(example.labels[index])
    clean, adversarial = int(example.clean_prediction[index]), int(example.adversarial_prediction[index])
    name = example.class_name
    return f"label {name(label)} → {name(clean)}", f"→ {name(adversarial)}", adversarial != label


def _linf(values: np.ndarray) -> float:
    return float(np.abs(values).max())


def _amplified(difference: np.ndarray) -> tuple[np.ndarray, float]:
    """Map a signed RGB difference onto [0,1] around mid-grey, scaled so its largest entry fills the range."""
    gain = 0.5 / max(_linf(difference), 1e-12)
    return np.clip(0.5 + gain * difference, 0, 1), gain


def _pixels(example: Example) -> bytes:
    count = min(3, len(example.clean))
    colour = example.clean.shape[1] == 3

    def draw(figure: Any) -> None:
        axes = figure.subplots(count, 3, squeeze=False)
        for index in range(count):
            clean, adversarial = example.clean[index], example.adversarial[index]
            difference = adversarial - clean
            truth, guess, fooled = _predictions(example, index)
            left, middle, right = axes[index]
            if colour:
                left.imshow(np.clip(clean.transpose(1, 2, 0), 0, 1), interpolation="nearest")
                middle.imshow(np.clip(adversarial.transpose(1, 2, 0), 0, 1), interpolation="nearest")
                shown, gain = _amplified(difference.transpose(1, 2, 0))
                right.imshow(shown, interpolation="nearest")
                right.set_title(f"difference ×{gain:.0f} (grey = 0)\n‖δ‖∞ = {_linf(difference):.3g}")
            else:
                colourmap = COLOURMAPS.get(example.modality, "gray")
                left.imshow(clean[0], cmap=colourmap, vmin=0, vmax=1, interpolation="nearest")
                picture = middle.imshow(adversarial[0], cmap=colourmap, vmin=0, vmax=1, interpolation="nearest")
                figure.colorbar(picture, ax=middle, shrink=0.8, label=UNITS.get(example.modality, "value"))
                limit = max(_linf(difference), 1e-12)
                change = right.imshow(
                    difference[0], cmap=DIFFERENCE_MAP, vmin=-limit, vmax=limit, interpolation="nearest"
                )
                figure.colorbar(change, ax=right, shrink=0.8, label="adversarial − clean")
                right.set_title(f"difference\n‖δ‖∞ = {limit:.3g}")
            left.set_title(f"clean\n{truth}")
            middle.set_title(f"adversarial\n{guess}", color=FLAG if fooled else "black")
            for axis in axes[index]:
                axis.set_axis_off()
        figure.suptitle(headline(example))

    return render(draw, width=7.8 if colour else 9.0, height=2.45 * count + 0.6)


def _video(example: Example) -> bytes:
    count = min(2, len(example.clean))
    frames = example.clean.shape[1]
    shown_frames = np.unique(np.linspace(0, frames - 1, min(frames, MAX_FRAMES)).round().astype(int))

    def draw(figure: Any) -> None:
        axes = figure.subplots(3 * count, len(shown_frames), squeeze=False)
        for index in range(count):
            clean, adversarial = example.clean[index], example.adversarial[index]  # (T, 3, H, W)
            difference = adversarial - clean
            shown, gain = _amplified(difference)
            truth, guess, fooled = _predictions(example, index)
            rows = (
                (clean, f"sample {index + 1}: clean\n{truth}", "black"),
                (adversarial, f"adversarial\n{guess}", FLAG if fooled else "black"),
                (shown, f"difference ×{gain:.0f}\n‖δ‖∞ = {_linf(difference):.3g}", "black"),
            )
            for offset, (clip, label, label_colour) in enumerate(rows):
                for column, frame in enumerate(shown_frames):
                    axis = axes[3 * index + offset, column]
                    axis.imshow(np.clip(clip[frame].transpose(1, 2, 0), 0, 1), interpolation="nearest")
                    axis.set_xticks([])
                    axis.set_yticks([])
                    if offset == 0:
                        axis.set_title(f"frame {frame + 1}")
                    if column == 0:
                        axis.set_ylabel(label, color=label_colour, fontsize=8.5)
        figure.suptitle(headline(example) + " (grey = no change in the difference rows)")

    return render(draw, width=1.55 * len(shown_frames) + 1.6, height=1.65 * 3 * count + 0.6)


def _events(example: Example) -> bytes:
    count = min(2, len(example.clean))
    bins = example.clean.shape[1]

    def draw(figure: Any) -> None:
        axes = figure.subplots(3 * count, bins, squeeze=False)
        for index in range(count):
            clean, adversarial = example.clean[index], example.adversarial[index]  # (T, 2, H, W)
            difference = (adversarial - clean).sum(1)  # (T, H, W): both polarities' changes
            limit = max(_linf(difference), 1e-12)
            truth, guess, fooled = _predictions(example, index)
            rows = (
                (clean[:, 0] - clean[:, 1], 1.0, f"sample {index + 1}: clean\n{truth}", "black"),
                (adversarial[:, 0] - adversarial[:, 1], 1.0, f"adversarial\n{guess}", FLAG if fooled else "black"),
                (difference, limit, f"difference\n‖δ‖∞ = {_linf(adversarial - clean):.3g}", "black"),
            )
            for offset, (planes, scale, label, label_colour) in enumerate(rows):
                for column in range(bins):
                    axis = axes[3 * index + offset, column]
                    axis.imshow(planes[column], cmap=DIFFERENCE_MAP, vmin=-scale, vmax=scale, interpolation="nearest")
                    axis.set_xticks([])
                    axis.set_yticks([])
                    if offset == 0:
                        axis.set_title(f"bin {column + 1}")
                    if column == 0:
                        axis.set_ylabel(label, color=label_colour, fontsize=8.5)
        figure.suptitle(headline(example) + " (ON red, OFF blue)")

    return render(draw, width=1.55 * bins + 1.6, height=1.65 * 3 * count + 0.6)


def _audio(example: Example) -> bytes:
    count = min(2, len(example.clean))
    rate = example.sample_rate

    def draw(figure: Any) -> None:
        axes = figure.subplots(2 * count, 3, squeeze=False)
        for index in range(count):
            clean, adversarial = example.clean[index], example.adversarial[index]
            difference = adversarial - clean
            truth, guess, fooled = _predictions(example, index)
            signals = (
                (clean, f"sample {index + 1}: clean ({truth})" if truth else f"sample {index + 1}: clean", "black"),
                (adversarial, f"adversarial ({guess})" if guess else "adversarial", FLAG if fooled else "black"),
                (difference, f"difference (same scale), ‖δ‖∞ = {_linf(difference):.3g}", "black"),
            )
            _waveforms(axes[2 * index], signals, rate)
            _spectrograms(figure, axes[2 * index + 1], signals, rate)
        figure.suptitle(headline(example) + f", {rate / 1000:g} kHz")

    return render(draw, width=12.0, height=4.6 * count + 0.6)


def _waveforms(axes: Any, signals: tuple, rate: int) -> None:
    """All three on one amplitude scale, so the difference looks as small as it is; an inset zooms into it."""
    loudest = max(_linf(signal) for signal, _, _ in signals) * 1.05 + 1e-6
    for axis, (signal, title, colour) in zip(axes, signals, strict=True):
        time = np.arange(len(signal)) / rate
        axis.plot(time, signal, linewidth=0.5, color="#1f4e79")
        axis.set_ylim(-loudest, loudest)
        axis.set_xlim(0, time[-1])
        axis.set_title(title, color=colour)
        axis.set_xlabel("time (s)")
    difference = signals[2][0]
    window = min(len(difference), rate * ZOOM_MS // 1000)
    start = (len(difference) - window) // 2
    inset = axes[2].inset_axes((0.52, 0.56, 0.45, 0.32))
    inset.plot(np.arange(start, start + window) / rate, difference[start : start + window], linewidth=0.7, color=FLAG)
    inset.set_ylim(-1.25 * _linf(difference) - 1e-9, 1.25 * _linf(difference) + 1e-9)
    inset.set_xticks([start / rate, (start + window) / rate])
    inset.set_title(f"{ZOOM_MS} ms zoom", fontsize=7, pad=2)
    inset.tick_params(labelsize=6)
    axes[0].set_ylabel("amplitude (waveform units)")


def _spectrograms(figure: Any, axes: Any, signals: tuple, rate: int) -> None:
    spectra = [log_mel(signal, rate) for signal, _, _ in signals]
    low, high = float(min(spectra[0].min(), spectra[1].min())), float(max(spectra[0].max(), spectra[1].max()))
    duration = len(signals[0][0]) / rate
    centres = band_centres(rate)
    ticks = [f for f in (500, 1000, 2000, 4000, 8000) if centres[0] <= f <= centres[-1]]
    for position, (axis, spectrum) in enumerate(zip(axes, spectra, strict=True)):
        limits = (low, high) if position < 2 else (float(spectrum.min()), float(spectrum.max()))
        picture = axis.imshow(
            spectrum, origin="lower", aspect="auto", cmap="magma", vmin=limits[0], vmax=limits[1],
            extent=(0, duration, 0, N_MELS), interpolation="nearest",
        )  # fmt: skip
        axis.set_yticks(np.interp(ticks, centres, np.arange(N_MELS)) + 0.5, [f"{f / 1000:g}" for f in ticks])
        axis.set_xlabel("time (s)")
        axis.grid(False)
        axis.set_title("log-mel of the difference" if position == 2 else "log-mel")
        if position != 0:
            figure.colorbar(picture, ax=axis if position == 2 else list(axes[:2]), label="log mel power")
    axes[0].set_ylabel("frequency (kHz, mel scale)")


def _viewing_axes(points: np.ndarray) -> tuple[int, int, int]:
    """(across, depth, up) data axes: look along the thinnest one, so a flat cloud such as a glyph faces the reader.

    Shape:
        points: (N, 3).
    """
    depth = int(np.argmin(points.std(axis=0)))
    across, up = (axis for axis in range(3) if axis != depth)
    return across, depth, up


def _points(example: Example) -> bytes:
    count = min(2, len(example.clean))
    names = "xyz"

    def draw(figure: Any) -> None:
        for index in range(count):
            clean, adversarial = example.clean[index], example.adversarial[index]  # (N, 3)
            displacement = adversarial - clean
            size = np.linalg.norm(displacement, axis=1)  # (N,)
            gain = max(1, math.floor(0.3 / max(float(size.max()), 1e-12)))
            order = list(_viewing_axes(clean))
            centre = (clean.max(axis=0) + clean.min(axis=0)) / 2
            half = float((clean.max(axis=0) - clean.min(axis=0)).max()) / 2 * 1.15 + 1e-6
            truth, guess, fooled = _predictions(example, index)
            left = figure.add_subplot(count, 2, 2 * index + 1, projection="3d")
            right = figure.add_subplot(count, 2, 2 * index + 2, projection="3d")
            left.scatter(*clean[:, order].T, s=7, color="#1f77b4", depthshade=False)
            left.set_title(f"sample {index + 1}: clean\n{truth}")
            dots = right.scatter(
                *adversarial[:, order].T, s=8, c=size, cmap="plasma", vmin=0, vmax=float(size.max()), depthshade=False
            )
            arrows = (gain * displacement)[:, order]
            right.quiver(*clean[:, order].T, *arrows.T, color="#444444", linewidth=0.6, arrow_length_ratio=0.25)
            right.set_title(f"adversarial {guess}\narrows: displacement ×{gain}", color=FLAG if fooled else "black")
            figure.colorbar(dots, ax=right, shrink=0.7, pad=0.12, label="‖δ‖₂ per point (input units)")
            for axis in (left, right):
                limits = [(centre[data] - half, centre[data] + half) for data in order]
                axis.set(xlim=limits[0], ylim=limits[1], zlim=limits[2])
                axis.set(xlabel=names[order[0]], ylabel=names[order[1]], zlabel=names[order[2]])
                axis.set_box_aspect((1, 1, 1))
                axis.view_init(elev=12, azim=-75)
                axis.tick_params(labelsize=6)
        figure.suptitle(headline(example))

    return render(draw, width=9.0, height=4.3 * count + 0.4)
