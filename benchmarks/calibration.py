"""Calibration, measured side by side in one run.

    python benchmarks/calibration.py compare [--modality image] [--n 100] [--steps 20] [--json]
    python benchmarks/calibration.py time-all [--epochs 4] [--recipe standard]
    python benchmarks/calibration.py pareto [--modality image] [--recipe calmars] [--plot pareto.png]
    python benchmarks/calibration.py budget

``compare``: every calibration method on one modality with the same data, eps and attack budget:
clean, transfer and adaptive robust top-1, trainable parameters, wall time, and the wall-time
ratio to full adversarial fine-tuning (target: static calibration <= 1/10 of it).
``time-all``: a recipe on all six TinyBind modalities (target: under 15 minutes on 2 cores).
``pareto``: adaptive robust top-1 against training wall time, side by side on the same data and
attack budget: a shipped recipe, LoRA alone, the paper's head, and full adversarial fine-tuning of
the tower (TeCoA and FARE) trained to convergence: 4, 8, 16, ... epochs until one more doubling
gains under ``--converged`` points. Prints a table with the non-dominated rows marked, and a plot.
With ``--json``, the same command run again resumes an interrupted run: the rows it measured are
kept, and the rung it was training resumes from its last finished epoch (a checkpoint in
``<json>.checkpoints/``), its train seconds those of every run that trained it.
``budget``: what an Linf budget of 1/255, 2/255 and 4/255 means for the built-in audio and point
clouds, measured on the test split: the speech-to-perturbation power ratio, the share of
spectrogram bins a perturbation can match, and a point's displacement against the spacing of the
cloud; the evidence behind what calibration can and cannot repair there.

The variants span the paper's post-encoder heads (each objective, trained on examples made
against the frozen encoder, and adaptively), a clean-trained head, in-encoder adapters, input
purifiers, and full adversarial fine-tuning of the tower (TeCoA: CE; FARE: label-free embedding
L2), so that one table says what each buys under transfer and under adaptive attack.
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy, wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import torch
from safetensors import SafetensorError, safe_open

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark, load_dataset
from bindguard.encoders import Encoder, create_encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.logmel import FLOOR
from bindguard.evaluation.calibration import evaluate_calibration
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
from bindguard.evaluation.robust import Progress, RobustSettings
from bindguard.training.calibrate import calibrate_modalities, calibrate_modality
from bindguard.training.recipe import CalibrationRecipe, load_recipe

# (label, recipe changes from the shared recipe)
VARIANTS: tuple[tuple[str, dict], ...] = (
    ("clean-trained head", {"method": "head", "objective": "clean", "mode": "static"}),
    ("paper head, ce, static", {"method": "head", "objective": "ce", "mode": "static"}),
    ("paper head, l2, static", {"method": "head", "objective": "l2", "mode": "static"}),
    ("paper head, infonce, static", {"method": "head", "objective": "infonce", "mode": "static"}),
    ("paper residual head, ce, static", {"method": "residual-head", "objective": "ce", "mode": "static"}),
    ("paper head, ce, adaptive", {"method": "head", "objective": "ce", "mode": "adaptive"}),
    ("lora, ce, adaptive", {"method": "lora", "objective": "ce", "mode": "adaptive"}),
    ("purifier, ce, adaptive", {"method": "purifier", "objective": "ce", "mode": "adaptive"}),
    ("purifier+lora, ce, adaptive", {"method": "purifier+lora", "objective": "ce", "mode": "adaptive"}),
    (
        "full fine-tune, TeCoA ce, adaptive",
        {"method": "finetune", "objective": "ce", "mode": "adaptive", "learning_rate": 2e-4},
    ),
    (
        "full fine-tune, FARE l2, adaptive",
        {"method": "finetune", "objective": "l2", "mode": "adaptive", "reg": 0.0, "learning_rate": 2e-4},
    ),
)


def compare_methods(
    base: Encoder,
    train: Benchmark,
    test: Benchmark,
    modality: Modality,
    *,
    recipe: CalibrationRecipe,
    settings: RobustSettings,
    variants: Sequence[tuple[str, dict]] = VARIANTS,
    progress: Progress | None = None,
) -> list[dict]:
    """One calibration row per variant (plus "none"), each with its wall time and trainable parameters.

    The threat of the claim is the recipe's; every variant is evaluated with the same ensemble,
    steps, Square queries and samples.
    """
    threat = ThreatModel.parse(recipe.norm, recipe.eps)
    data = train.data[modality]
    centers = semantic_centers(base, train.class_names, train.templates[modality])
    rows = []
    for label, changes in variants:
        variant = replace(recipe, **changes)
        started = time.perf_counter()
        outcome = calibrate_modality(base, modality, data.inputs, data.labels, centers, variant, progress=progress)
        seconds = time.perf_counter() - started
        calibrated = CalibratedEncoder(base, {modality: outcome.calibration})
        row, _ = evaluate_calibration(
            base, calibrated, test, threat, settings=settings, modalities=[modality], progress=progress
        )
        rows.append(row[0] | {"variant": label, "train_seconds": seconds})
    none = dict(rows[0]) if rows else {}
    if none:
        before = none["before"]
        none |= {
            "variant": "no calibration",
            "method": "none",
            "objective": "-",
            "mode": "-",
            "after": {
                "clean_top1": before["clean_top1"],
                "clean_top5": before["clean_top5"],
                "transfer_top1": before["robust_top1"],
                "transfer_top5": before["robust_top5"],
                "robust_top1": before["robust_top1"],
                "robust_top5": before["robust_top5"],
            },
            "trainable_parameters": 0,
            "trainable_fraction": 0.0,
            "train_seconds": 0.0,
            "flags": [],
        }
    return ([none] if none else []) + rows


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def compare(arguments: argparse.Namespace) -> None:
    modality = Modality.parse(arguments.modality)
    base = create_encoder("tinybind")
    train = load_dataset("builtin", split="train", modalities=[modality], limit=arguments.limit)
    test = load_dataset("builtin", split="test", modalities=[modality], limit=arguments.n)
    recipe = CalibrationRecipe(eps=arguments.eps, epochs=arguments.epochs)
    settings = RobustSettings(
        ensemble=STANDARD_ENSEMBLE, steps=arguments.steps, square_queries=arguments.square_queries, check_samples=16
    )
    chosen = [v for v in VARIANTS if not arguments.only or any(word in v[0] for word in arguments.only.split(","))]
    started = time.perf_counter()
    rows = compare_methods(base, train, test, modality, recipe=recipe, settings=settings, variants=chosen)
    if arguments.json:
        json.dump(
            {"recipe": vars(arguments), "seconds": time.perf_counter() - started, "rows": rows}, sys.stdout, indent=2
        )
        return
    finetune = next((r["train_seconds"] for r in rows if "TeCoA" in r.get("variant", "")), None)
    first = rows[0]
    print(
        f"{modality.value}, {first['norm']} eps {first['eps'] * 255:.0f}/255 (abs {first['eps_abs']:.4g}), "
        f"{first['attack']} ensemble {first['steps']} steps + Square {first['square_queries']}, "
        f"n={first['n']} test samples, {arguments.epochs} epochs on {len(train.data[modality])} train samples\n"
    )
    print(
        "| variant | trainable (% of encoder) | train s | time / full FT | clean | transfer | adaptive | adaptive top-5 | flags |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        after = row["after"]
        ratio = f"{row['train_seconds'] / finetune:.3f}" if finetune and row["train_seconds"] else "-"
        print(
            f"| {row['variant']} | {row['trainable_parameters']:,} ({100 * row['trainable_fraction']:.2f}%) "
            f"| {row['train_seconds']:.0f} | {ratio} | {_percent(after['clean_top1'])} | {_percent(after['transfer_top1'])} "
            f"| {_percent(after['robust_top1'])} | {_percent(after['robust_top5'])} | {', '.join(row['flags']) or 'ok'} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def time_all(arguments: argparse.Namespace) -> None:
    base = create_encoder("tinybind")
    modalities = list(PERCEPTUAL_MODALITIES)
    train = load_dataset("builtin", split="train", modalities=modalities)
    recipe = load_recipe(arguments.recipe)
    recipe = recipe.with_settings(epochs=arguments.epochs) if arguments.epochs else recipe
    total = 0.0
    print(
        f"recipe {recipe.name}: {recipe.method}, {recipe.objectives}, eps {recipe.threat}, {recipe.total_epochs} epochs\n"
    )
    print("| modality | train samples | seconds |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for modality in modalities:
            started = time.perf_counter()
            calibrate_modalities(base, train, [modality], recipe, Path(folder))
            seconds = time.perf_counter() - started
            total += seconds
            print(f"| {modality.value} | {len(train.data[modality])} | {seconds:.0f} |", flush=True)
    print(f"| all six | | {total:.0f} ({total / 60:.1f} min; target < 15 min) |")


def _train_and_measure(base, train, test, modality, recipe, settings, label, checkpoint=None) -> dict:
    """Train ``recipe`` and measure it; with ``checkpoint``, training resumes from it and its
    seconds are those of every run that trained it (the checkpoint carries the earlier runs' time)."""
    data = train.data[modality]
    centers = semantic_centers(base, train.class_names, train.templates[modality])
    outcome = calibrate_modality(base, modality, data.inputs, data.labels, centers, recipe, checkpoint=checkpoint)
    seconds = outcome.seconds
    calibrated = CalibratedEncoder(base, {modality: outcome.calibration})
    rows, _ = evaluate_calibration(base, calibrated, test, recipe.threat, settings=settings, modalities=[modality])
    row = rows[0]
    print(
        f"  {label}: {seconds:.0f} s, clean {_percent(row['after']['clean_top1'])}, "
        f"adaptive {_percent(row['after']['robust_top1'])}",
        file=sys.stderr,
        flush=True,
    )
    return row | {"variant": label, "train_seconds": seconds, "epochs": recipe.for_modality(modality).total_epochs}


# full adversarial fine-tuning of the tower: TeCoA (CE on the centers), FARE (label-free embedding L2)
FINE_TUNES = {
    "TeCoA": {"method": "finetune", "objective": "ce", "learning_rate": 2e-4},
    "FARE": {"method": "finetune", "objective": "l2", "reg": 0.0, "learning_rate": 2e-4},
}


def pareto(arguments: argparse.Namespace) -> None:
    unknown = sorted(set(arguments.fine_tunes.split(",")) - set(FINE_TUNES))
    if unknown:
        print(
            f"error: unknown --fine-tunes {', '.join(unknown)}; fix: choose from {', '.join(FINE_TUNES)}",
            file=sys.stderr,
        )
        sys.exit(2)
    earlier, wall_before = _unfinished(arguments)  # an interrupted run's rows, measured, are not measured again
    modality = Modality.parse(arguments.modality)
    base = create_encoder("tinybind")
    train = load_dataset("builtin", split="train", modalities=[modality], limit=arguments.limit)
    test = load_dataset("builtin", split="test", modalities=[modality], limit=arguments.n)
    settings = RobustSettings(
        ensemble=STANDARD_ENSEMBLE, steps=arguments.steps, square_queries=arguments.square_queries, check_samples=16
    )
    shipped = load_recipe(arguments.recipe).for_modality(modality)
    standard = load_recipe("standard")
    started = time.perf_counter()
    rows: list[dict] = []
    checkpoints = arguments.json.with_name(arguments.json.name + ".checkpoints") if arguments.json else None

    def measure(recipe: CalibrationRecipe, label: str) -> dict:
        if label in earlier:
            rows.append(earlier[label])
            print(f"  {label}: kept from the interrupted run in {arguments.json}", file=sys.stderr, flush=True)
            return earlier[label]
        nonlocal wall_before
        checkpoint = checkpoints / (_slug(label) + ".safetensors") if checkpoints else None
        # the interrupted runs that trained this rung saved no row, so their wall is counted by the
        # training time their checkpoint carries
        wall_before += _checkpoint_seconds(checkpoint)
        row = _train_and_measure(base, train, test, modality, recipe, settings, label, checkpoint)
        rows.append(row)
        wall = wall_before + time.perf_counter() - started
        _save_rows(arguments, rows, complete=False, wall=wall)  # an interrupted run keeps the rows it measured
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)  # the row holds what it measured
        return row

    measure(shipped, f"recipe {shipped.name}")
    if arguments.baselines:
        measure(standard, "standard (purifier+lora, 4 epochs)")
        measure(standard.with_settings(method="lora"), "lora alone, 4 epochs")
        measure(standard.with_settings(method="head", mode="static"), "paper head, ce, static")
    for name in arguments.fine_tunes.split(","):
        changes = FINE_TUNES[name]
        best = None
        for epochs in (int(e) for e in arguments.ladder.split(",")):
            row = measure(standard.with_settings(**changes, epochs=epochs), f"full fine-tune {name}, {epochs} ep")
            robust = 100 * row["after"]["robust_top1"]
            if best is not None and robust - best < arguments.converged:
                row["converged"] = True  # one more doubling bought less than --converged points
                break
            best = robust if best is None else max(best, robust)
    _mark_front(rows)
    first = rows[0]
    header = (
        f"{modality.value}, {first['norm']} eps {first['eps'] * 255:.0f}/255 (abs {first['eps_abs']:.4g}), "
        f"{first['attack']} ensemble {first['steps']} steps + Square {first['square_queries']}, "
        f"n={first['n']} test samples, {len(train.data[modality])} train samples, "
        f"{torch.get_num_threads()} threads; wall {wall_before + time.perf_counter() - started:.0f} s"
        + (" over several runs (resumed)" if earlier or wall_before else "")
    )
    _save_rows(arguments, rows, complete=True, header=header, wall=wall_before + time.perf_counter() - started)
    if checkpoints is not None and checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    _print_pareto(rows, header)
    if arguments.plot:
        _plot(rows, arguments.plot, modality)


def pareto_render(arguments: argparse.Namespace) -> None:
    """The table, the verdict and (with ``--plot``) the plot again, from a finished run's ``--json``."""
    try:
        document = json.loads(arguments.file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"error: cannot read {arguments.file} ({error}); fix: give the --json of a pareto run", file=sys.stderr)
        sys.exit(2)
    if not document.get("complete"):
        print(f"error: {arguments.file} is from a run that did not finish; fix: run pareto again", file=sys.stderr)
        sys.exit(2)
    _print_pareto(document["rows"], document["header"])
    if arguments.plot:
        _plot(document["rows"], arguments.plot, Modality.parse(document["arguments"]["modality"]))


def _print_pareto(rows: list[dict], header: str) -> None:
    print(header + "\n")
    print(
        "| variant | epochs | trainable (% of encoder) | train s | clean | adaptive | adaptive top-5 | on the front | flags |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|---|")
    fine = [r for r in rows if r["variant"].startswith("full fine-tune")]
    for row in rows:
        after = row["after"]
        mark = "yes" if row["front"] else ""
        print(
            f"| {row['variant']}{_ladder_state(row, fine)} | {row['epochs']} | {row['trainable_parameters']:,} "
            f"({100 * row['trainable_fraction']:.2f}%) | {row['train_seconds']:.0f} | {_percent(after['clean_top1'])} "
            f"| {_percent(after['robust_top1'])} | {_percent(after['robust_top5'])} | {mark} "
            f"| {', '.join(row['flags']) or 'ok'} |"
        )
    print()
    for line in _pareto_verdict(rows[0], fine):
        print(line)


def _rungs(row: dict, fine: list[dict]) -> list[dict]:
    """The full fine-tune rows of ``row``'s ladder ("full fine-tune FARE"), in training order."""
    ladder = row["variant"].rsplit(",", 1)[0]
    return [r for r in fine if r["variant"].rsplit(",", 1)[0] == ladder]


def _ladder_state(row: dict, fine: list[dict]) -> str:
    """What a row says of its ladder: converged, ended still gaining, or unjudged (one rung compares with nothing)."""
    if row.get("converged"):
        return " (converged)"
    rungs = _rungs(row, fine)
    if not rungs or rungs[-1] is not row:
        return ""
    return " (one rung, convergence not judged)" if len(rungs) == 1 else " (ladder ended, not converged)"


def _convergence(row: dict, fine: list[dict]) -> str:
    """What the verdict says of the ladder that a full fine-tune's row belongs to."""
    rungs = _rungs(row, fine)
    if any(r.get("converged") for r in rungs):
        return " (converged)"
    return " (one rung, convergence not judged)" if len(rungs) == 1 else " (not converged)"


def _pareto_verdict(recipe: dict, fine: list[dict]) -> list[str]:
    """The target: the recipe at least as robust as full fine-tuning at no more than 1/3 of its time."""
    robust, seconds = recipe["after"]["robust_top1"], recipe["train_seconds"]
    best = max(fine, key=lambda r: (r["after"]["robust_top1"], -r["train_seconds"]))
    lines = [
        f"{recipe['variant']}: adaptive {_percent(robust)} in {seconds:.0f} s; most robust full fine-tune: "
        f"{best['variant']}, {_percent(best['after']['robust_top1'])} in {best['train_seconds']:.0f} s"
        + _convergence(best, fine)
    ]
    if robust >= best["after"]["robust_top1"]:
        ratio = seconds / best["train_seconds"]
        verdict = "met" if ratio <= 1 / 3 else "not met"
        lines.append(f"target (as robust, <= 1/3 of its time): time ratio {ratio:.2f}, {verdict}")
    else:
        gap = 100 * (best["after"]["robust_top1"] - robust)
        lines.append(f"target (as robust, <= 1/3 of its time): not met, the recipe is {gap:.1f} points less robust")
    matched = [r for r in fine if r["after"]["robust_top1"] >= robust]
    if matched:
        first = min(matched, key=lambda r: r["train_seconds"])
        lines.append(
            f"the quickest full fine-tune at least as robust as the recipe: {first['variant']}, "
            f"{_percent(first['after']['robust_top1'])} in {first['train_seconds']:.0f} s; the recipe takes "
            f"{seconds / first['train_seconds']:.2f} of that time"
        )
    return lines


# the pareto arguments that decide what a row measures: an interrupted run resumes only under the same ones
_MEASURED = ("threads", "modality", "recipe", "limit", "n", "steps", "square_queries", "ladder", "fine_tunes")


def _unfinished(arguments: argparse.Namespace) -> tuple[dict[str, dict], float]:
    """The rows, by variant, and the wall seconds of an interrupted run of the same command in ``--json``."""
    if not arguments.json or not arguments.json.is_file():
        return {}, 0.0
    try:
        document = json.loads(arguments.json.read_text())
    except (OSError, json.JSONDecodeError) as error:
        _refuse(f"cannot read {arguments.json} ({error})", "delete it or choose another --json")
    if document.get("complete"):
        return {}, 0.0  # a finished run: this one measures anew and replaces it
    saved = document.get("arguments", {})
    changed = [name for name in _MEASURED if saved.get(name) != getattr(arguments, name)]
    if changed:
        _refuse(
            f"{arguments.json} holds an interrupted run with other arguments (changed: {', '.join(changed)})",
            "rerun it with the same arguments to resume it, or choose another --json",
        )
    return {row["variant"]: row for row in document["rows"]}, float(document.get("wall_seconds") or 0.0)


def _checkpoint_seconds(checkpoint: Path | None) -> float:
    """The training seconds a rung's checkpoint records; 0 without one (a bad one fails in training, clearly)."""
    if checkpoint is None or not checkpoint.is_file():
        return 0.0
    try:
        with safe_open(str(checkpoint), "pt") as file:
            seconds = float((file.metadata() or {}).get("seconds", "0"))
    except (OSError, ValueError, SafetensorError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _refuse(what: str, fix: str) -> NoReturn:
    print(f"error: {what}; fix: {fix}", file=sys.stderr)
    sys.exit(2)


def _slug(label: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def _save_rows(
    arguments: argparse.Namespace, rows: list[dict], complete: bool, header: str = "", wall: float | None = None
) -> None:
    """Write the rows so far to ``--json`` (by rename, so a reader never sees half a file)."""
    if not arguments.json:
        return
    document = {
        "arguments": vars(arguments) | {"plot": str(arguments.plot), "json": str(arguments.json)},
        "wall_seconds": wall,
        "threads": {"torch": torch.get_num_threads(), "omp_wait_policy": wait_policy()},
        "complete": complete,
        "header": header,
        "rows": rows,
    }
    partial = arguments.json.with_name(arguments.json.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.replace(arguments.json)


def _mark_front(rows: list[dict]) -> None:
    """A row is on the Pareto front when no other row is at least as robust in at most its time, and better in one."""
    for row in rows:
        robust, seconds = row["after"]["robust_top1"], row["train_seconds"]
        row["front"] = not any(
            other is not row
            and other["after"]["robust_top1"] >= robust
            and other["train_seconds"] <= seconds
            and (other["after"]["robust_top1"] > robust or other["train_seconds"] < seconds)
            for other in rows
        )


def _plot(rows: list[dict], path: Path, modality: Modality) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    placed: list[tuple[float, float]] = []
    for row in rows:
        x, y = row["train_seconds"], 100 * row["after"]["robust_top1"]
        color = "C0" if row["front"] else "C3"
        low, high = row["after"]["robust_top1_ci95"]
        # the 95% interval shows which gaps the sample can tell apart and which are ties
        axes.errorbar(x, y, yerr=[[y - 100 * low], [100 * high - y]], color=color, lw=1, capsize=3)
        axes.scatter(x, y, s=40, marker="o" if row["front"] else "x", color=color, zorder=3)
        # a label near an earlier one (within a tenth of a decade and 3 points) goes below its point
        crowded = any(abs(math.log10(x / px)) < 0.1 and abs(y - py) < 3 for px, py in placed)
        placed.append((x, y))
        axes.annotate(row["variant"], (x, y), fontsize=7, xytext=(4, -9 if crowded else 3), textcoords="offset points")
    front = sorted((r for r in rows if r["front"]), key=lambda r: r["train_seconds"])
    axes.plot([r["train_seconds"] for r in front], [100 * r["after"]["robust_top1"] for r in front], color="C0", lw=1)
    first = rows[0]
    axes.set_xscale("log")
    axes.margins(x=0.2)  # room for the right-most label
    axes.set_xlabel("training wall time, s (log)")
    axes.set_ylim(0, 100)  # a full axis, so that a gap of two points looks like two points
    axes.set_ylabel("adaptive robust top-1, % (95% Wilson interval)")
    axes.set_title(
        f"TinyBind {modality.value}, Linf {first['eps'] * 255:.0f}/255, {first['attack']} {first['steps']} steps, "
        f"n={first['n']}",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def budget(arguments: argparse.Namespace) -> None:
    test = load_dataset("builtin", split="test", modalities=[Modality.AUDIO, Modality.POINT], limit=arguments.n)
    base = create_encoder("tinybind")
    audio, points = test.data[Modality.AUDIO].inputs, test.data[Modality.POINT].inputs
    audio_range = base.input_spec(Modality.AUDIO).range
    window = torch.hann_window(512, periodic=True)
    magnitude = torch.stft(audio, 512, 128, window=window, return_complex=True).abs() / (window.sum() / 2)
    speech_rms = float(audio.square().mean().sqrt())
    spacing = (torch.cdist(points, points) + 10 * torch.eye(points.shape[1])).amin(-1)
    print(f"built-in test split, {len(audio)} spoken digits and {len(points)} point clouds (first of each)\n")
    print(
        "| Linf eps (relative) | audio eps (abs) | speech RMS / eps, dB | spectrogram bins below 2 eps | "
        "point eps (abs) | largest point shift / median neighbour spacing |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for text in ("1/255", "2/255", "4/255"):
        threat = ThreatModel.linf(text)
        eps_audio = threat.absolute(base.input_spec(Modality.AUDIO))
        eps_point = threat.absolute(base.input_spec(Modality.POINT))
        ratio_db = 20 * torch.log10(torch.tensor(speech_rms / eps_audio))
        # any Linf-eps waveform has at most 2 eps in a bin of this normalised spectrogram
        below = float((magnitude < 2 * eps_audio).float().mean())
        shift = eps_point * 3**0.5  # a corner of the Linf box
        print(
            f"| {text} | {eps_audio:.4f} | {float(ratio_db):.1f} | {100 * below:.1f}% | {eps_point:.4f} "
            f"| {shift / float(spacing.median()):.2f} |"
        )
    print(
        f"\naudio range {audio_range:g}, speech RMS {speech_rms:.4f}; point median neighbour spacing "
        f"{float(spacing.median()):.4f}"
    )
    _mel_band_power(base, audio)


def _mel_band_power(base: Encoder, audio: torch.Tensor) -> None:
    """What a Linf-eps waveform can put into one mel band of TinyBind's front end, against the speech's bands.

    The front end takes log(mel power + floor); a learned floor (the calibration ``floor`` part) can only
    hide what lies below it, so it helps only if the attacker's bands stay below most of the speech's.
    """
    spec = base.input_spec(Modality.AUDIO)
    with torch.no_grad():
        speech = (base.log_mel(audio).exp() - FLOOR).flatten()
        quantiles = torch.quantile(speech[:: max(1, speech.numel() // 1_000_000)], torch.tensor([0.1, 0.5, 0.9]))
        print(
            "\nTinyBind log-mel band power (the front end's power units) that one Linf-eps waveform can reach; "
            "speech bands: 10% / 50% / 90% quantiles " + " / ".join(f"{float(q):.3g}" for q in quantiles) + "\n"
        )
        print("| Linf eps | perturbation | median band | loudest band of a frame (median) | speech bands below it |")
        print("|---|---|---:|---:|---:|")
        generator = torch.Generator().manual_seed(0)
        seconds = torch.arange(spec.shape[0]) / base.config.sample_rate
        for text in ("1/255", "2/255", "4/255"):
            eps = ThreatModel.linf(text).absolute(spec)
            shapes = {
                "white: random signs": torch.sign(torch.randn(8, *spec.shape, generator=generator)),
                "narrow: 1 kHz square wave": torch.sign(torch.sin(2 * torch.pi * 1000 * seconds)).expand(8, -1),
            }
            for name, signs in shapes.items():
                bands = base.log_mel(eps * signs).exp() - FLOOR
                loudest = bands.amax(1).median()
                below = float((speech < loudest).float().mean())
                print(f"| {text} | {name} | {float(bands.median()):.3g} | {float(loudest):.3g} | {100 * below:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("compare")
    one.add_argument("--modality", default="image")
    one.add_argument("--eps", default="4/255")
    one.add_argument("--epochs", type=int, default=4)
    one.add_argument("--limit", type=int, default=None, help="training samples")
    one.add_argument("--n", type=int, default=100, help="test samples")
    one.add_argument("--steps", type=int, default=20)
    one.add_argument("--square-queries", type=int, default=200)
    one.add_argument("--only", default="", help="comma-separated words; keep variants whose label has one")
    one.add_argument("--json", action="store_true")
    every = commands.add_parser("time-all")
    every.add_argument("--recipe", default="standard")
    every.add_argument("--epochs", type=int, default=None, help="replace the recipe's epochs (flat recipes only)")
    front = commands.add_parser("pareto")
    front.add_argument("--modality", default="image")
    front.add_argument("--recipe", default="calmars", help="the shipped recipe to compare")
    front.add_argument("--limit", type=int, default=None, help="training samples")
    front.add_argument("--n", type=int, default=100, help="test samples")
    front.add_argument("--steps", type=int, default=20)
    front.add_argument("--square-queries", type=int, default=200)
    front.add_argument("--ladder", default="4,8,16", help="full fine-tuning epochs tried, in order")
    front.add_argument("--fine-tunes", default="TeCoA,FARE", help="the full fine-tuning objectives laddered")
    front.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure standard, LoRA alone and the paper head (--no-baselines: the recipe against fine-tuning)",
    )
    front.add_argument("--converged", type=float, default=2.0, help="points; stop the ladder below this gain")
    front.add_argument("--plot", type=Path, default=None, help="write the robust-vs-time plot here (PNG)")
    front.add_argument("--json", type=Path, default=None, help="write the rows here")
    again = commands.add_parser("pareto-render")
    again.add_argument("file", type=Path, help="a finished pareto run's --json")
    again.add_argument("--plot", type=Path, default=None, help="write the robust-vs-time plot here (PNG)")
    evidence = commands.add_parser("budget")
    evidence.add_argument("--n", type=int, default=200, help="test samples of each")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    {"compare": compare, "time-all": time_all, "pareto": pareto, "pareto-render": pareto_render, "budget": budget}[
        arguments.command
    ](arguments)


if __name__ == "__main__":
    main()
