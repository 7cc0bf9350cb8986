"""``bindguard.calibrate`` and ``bindguard.evaluate_calibration``: repair an encoder, then measure the repair."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bindguard import distributed
from bindguard._checks import check_count
from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.data import DATASETS, Benchmark
from bindguard.encoders import Encoder
from bindguard.encoders.calibrated import CalibratedEncoder
from bindguard.errors import ConfigError
from bindguard.evaluation.calibration import evaluate_calibration as measure_calibration
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
from bindguard.evaluation.results import Results
from bindguard.pipeline.provenance import data_fingerprints, provenance, state_versions
from bindguard.pipeline.setup import (
    check_data_name,
    check_out,
    choose_modalities,
    data_name,
    load_data,
    load_encoder,
    parse_threats,
    robust_settings,
)
from bindguard.training.calibrate import calibrate_modalities
from bindguard.training.recipe import PHASE_FIELDS, CalibrationRecipe, load_recipe

Progress = Callable[[str, int, int], None]


def calibrate(
    encoder: Encoder | str = "tinybind",
    data: Benchmark | str = "builtin",
    *,
    recipe: CalibrationRecipe | str | Path = "standard",
    modalities: str | Sequence[str] = "all",
    limit: int | None = None,
    out: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    **recipe_options: Any,
) -> CalibratedEncoder:
    """Train per-modality calibrations of a frozen encoder on adversarial examples of the train split.

    The backbone's weights and the text semantic centers stay frozen; only small modules train
    (purifier, low-rank adapters, heads: see ``CalibrationRecipe``). With ``out``, each finished
    modality is saved there at once (``config.json`` + ``model.safetensors``) and an interrupted
    call resumes where it stopped; load it later with ``create_encoder(name, calibration=out)``.

    Example::

        calibrated = bindguard.calibrate("tinybind", "builtin", modalities="image", out="runs/cal")
        results = bindguard.evaluate_calibration(calibrated, "builtin", n=100, out="runs/cal")

    Args:
        encoder: a registered name or an ``Encoder``; it is not modified.
        data: a data set with a train split, or a ``Benchmark`` to train on.
        recipe: a ``CalibrationRecipe``, the name of a shipped one (``standard``, ``calmars``: see
            ``bindguard.training.recipe.shipped_recipes``) or a recipe file's path.
        modalities: ``"all"`` or names.
        limit: train on at most this many samples per modality.
        out: folder for the calibration and its resumable checkpoints (None: a temporary one).
        weights: trained parts for an encoder built by name.
        device: where to train; default CUDA when available, else the CPU.
        progress: optional ``callback(stage, done, total)``.
        recipe_options: ``CalibrationRecipe`` fields that replace the recipe's (e.g. ``epochs=2``).

    Returns:
        The calibrated encoder (an ``Encoder``), restricted to the modalities calibrated here.
    """
    if not isinstance(recipe, CalibrationRecipe):
        if not isinstance(recipe, str | Path):
            raise ConfigError(f"recipe must be a CalibrationRecipe, a recipe name or a file, got {recipe!r}")
        recipe = load_recipe(recipe)
    recipe = recipe.with_settings(**recipe_options) if recipe_options else recipe
    recipe.check()
    out = check_out(out)
    world = distributed.setup(None if device is None else str(device))
    if world.size > 1 and out is None:
        raise ConfigError("a launched run (torchrun) shares one calibration folder among its processes; give out=")
    check_data_name(data)
    check_count("limit", limit, 2, optional=True)
    torch.manual_seed(recipe.seed)
    base = load_encoder(encoder, weights=weights, device=device)
    chosen = choose_modalities(modalities, base)
    train = load_data(data, base, chosen, split="train", limit=limit, required=False)
    chosen = [m for m in chosen if m in train.data]
    if out is not None:
        return calibrate_modalities(base, train, chosen, recipe, out, progress=progress)
    with tempfile.TemporaryDirectory(prefix="bindguard-calibration-") as folder:
        calibrated = calibrate_modalities(base, train, chosen, recipe, Path(folder), progress=progress)
    calibrated.source = None  # the temporary folder is gone
    return calibrated


def evaluate_calibration(
    calibrated: CalibratedEncoder,
    data: Benchmark | str = "builtin",
    *,
    eps: str | float | None = None,
    norm: str | None = None,
    n: int | None = 100,
    steps: int = 20,
    square_queries: int = 200,
    checks: bool = True,
    check_samples: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> Results:
    """Clean, transfer and adaptive robust accuracy of each calibrated modality, before and after.

    Adaptive attacks run end to end through the calibration (with EOT when it is randomized) and
    are the robustness claim; transfer attacks (examples made on the uncalibrated encoder) are
    reported beside them, never instead.

    Args:
        calibrated: from ``calibrate`` or ``create_encoder(name, calibration=DIR)``.
        data: evaluation data (its test split).
        eps, norm: the budget; default the one the calibration was trained at.
        n: test samples per modality.
        steps, square_queries, checks, check_samples, batch_size, seed: as in ``evaluate``.
        out: folder for ``results.json`` and the resumable state (usually the calibration's folder).
        progress: optional ``callback(stage, done, total)``.

    Returns:
        ``Results`` with one ``CalibrationRow`` per modality and the calibrated model's own robust rows.
    """
    if not isinstance(calibrated, CalibratedEncoder) or not len(calibrated.calibrations):
        raise ConfigError("evaluate_calibration needs a calibrated encoder; fix: bindguard.calibrate(...) first")
    out = check_out(out)
    distributed.setup(str(calibrated.device))
    check_data_name(data)
    check_count("n", n, 1, optional=True)
    trained = next(iter(calibrated.calibrations.values())).config.threat
    threat = parse_threats([trained["eps"] if eps is None else eps], norm or trained["norm"])[0]
    settings = robust_settings(
        STANDARD_ENSEMBLE,
        [threat],
        steps=steps,
        square_queries=square_queries,
        checks=checks,
        check_samples=check_samples,
        batch_size=batch_size,
        seed=seed,
    )
    started = time.perf_counter()
    chosen = [m for m in PERCEPTUAL_MODALITIES if m.value in calibrated.calibrations]  # the canonical order
    # image and depth come along as galleries for the instance-retrieval alignment check
    named = isinstance(data, str) and data in DATASETS.names()
    partners = [m for m in (Modality.IMAGE, Modality.DEPTH) if m not in chosen and m in calibrated.modalities]
    test = load_data(data, calibrated, chosen + (partners if named else []), split="test", limit=n, required=False)
    folder = calibrated.source or out  # where the calibration lives, when it was loaded from a folder
    source = str(folder) if folder is not None else calibrated.identity
    fingerprints = data_fingerprints(test, batch_size=batch_size)
    calibration_rows, robust_rows = measure_calibration(
        calibrated.base,
        calibrated,
        test,
        threat,
        settings=settings,
        modalities=[m for m in chosen if m in test.data],
        state_directory=None if out is None else out / "state",
        run_config={
            "model": calibrated.identity,
            "data": data_name(data),
            "data_fingerprint": fingerprints,
            "n": n,
            "versions": state_versions(),
        },
        progress=progress,
    )
    recipes = {modality: c.config.recipe for modality, c in calibrated.calibrations.items()}
    recipe = next(iter(recipes.values()))
    results = Results.new(
        model=calibrated.name,
        data=data_name(data),
        seed=seed,
        rows=calibration_rows + [row | {"calibration": source} for row in robust_rows],
        settings={
            "calibration": source,
            "recipe": shown_recipes(recipes),
            "train_limit": recipe.get("n"),
            "evaluation": {"n": n, "steps": steps, "square_queries": square_queries, "checks": checks},
            "model_identity": calibrated.identity,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    results.provenance = provenance(
        model=calibrated, data=data_name(data), fingerprints=fingerprints, seed=seed, calibration=folder
    )
    if out is not None and distributed.current().main:
        results.write(out)
    distributed.barrier()
    return results


_RECIPE_FIELDS = tuple(asdict(CalibrationRecipe()))


def shown_recipes(recipes: dict[str, dict]) -> dict:
    """Each modality's recipe as one: the settings most modalities share, and under ``modalities``
    the fields where a modality's differ (a per-modality override, e.g. longer phases)."""
    shown = {modality: _shown_recipe(recipe) for modality, recipe in recipes.items()}
    values = list(shown.values())
    common = max(values, key=values.count)
    differences = {}
    for modality, recipe in shown.items():
        # a field the modality's phases all set is absent from it, not a difference (its phases show it)
        changed = {k: recipe[k] for k in sorted(recipe) if recipe[k] != common.get(k)}
        if changed:
            differences[modality] = changed
    return {k: v for k, v in common.items() if k != "modalities"} | ({"modalities": differences} if differences else {})


def _shown_recipe(recipe: dict) -> dict:
    """The recipe's fields; with phases, a flat setting that every phase overrides is left out (it would
    mislead), and one that some phase inherits stays (the phase trains with it)."""
    shown = {k: v for k, v in recipe.items() if k in _RECIPE_FIELDS}
    phases = shown.get("phases") or []
    if phases:
        overridden = {k for k in PHASE_FIELDS if k != "name" and all(k in phase for phase in phases)}
        shown = {k: v for k, v in shown.items() if k not in overridden}
    return shown
