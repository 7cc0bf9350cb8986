"""``bindguard.evaluate``: clean and robust zero-shot classification and retrieval of one encoder, one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bindguard import distributed
from bindguard._checks import check_count, check_seed
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.encoders.expectation import EOT_SAMPLES, with_expectation
from bindguard.evaluation.captions import caption_robust_rows, caption_rows
from bindguard.evaluation.clean import evaluate_clean
from bindguard.evaluation.ensemble import Ensemble
from bindguard.evaluation.results import Results
from bindguard.evaluation.robust import evaluate_robust
from bindguard.pipeline.cost import (
    CostEstimate,
    estimate_cost,
    fitting_batch_size,
    passes_per_sample,
    warn_if_slow,
)
from bindguard.pipeline.provenance import data_fingerprints, provenance, state_versions
from bindguard.pipeline.setup import (
    FileOptions,
    check_data_name,
    check_out,
    choose_modalities,
    data_name,
    load_data,
    load_encoder,
    parse_threats,
    robust_settings,
    with_class_centers,
)

Progress = Callable[[str, int, int], None]


def evaluate(
    encoder: Encoder | str = "tinybind",
    data: Benchmark | str = "builtin",
    *,
    data_root: str | Path | None = None,
    skip_bad_files: bool = False,
    templates: str | Path | None = None,
    attacks: str | Ensemble | None = "standard",
    eps: str | float | Sequence[str | float] = ("4/255",),
    norm: str = "linf",
    n: int | None = None,
    modalities: str | Sequence[str] = "all",
    steps: int = 100,
    square_queries: int = 1000,
    checks: bool = True,
    check_samples: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    precision: str = "float32",
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
    centers: str | Path | None = None,
    center_rule: str = "nearest",
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> Results:
    """Evaluate zero-shot classification and retrieval, clean and under attack.

    Robust rows are the per-sample worst case over the ensemble, attacked end to end through
    whatever the encoder contains (a calibration included); a randomized encoder is attacked and
    measured through the EOT average of its embeddings. With ``out``, ``results.json`` is written
    there and an interrupted run resumes from ``out/state`` when called again with the same inputs.

    Started by a launcher (``torchrun --nproc-per-node N``), every process runs this call: the
    samples' batches are shared out by rank, each rank keeps its own resumable state
    (``out/state/*.rank<R>.json``), and rank 0 writes ``results.json``, whose rows equal a single
    process's. Every rank returns the same ``Results``.

    Example::

        results = bindguard.evaluate("tinybind", "builtin", attacks="standard", eps=["4/255"], n=100)
        for row in results.robust:
            print(row.modality, row.clean_top1, row.top1, row.flags)

    Args:
        encoder: a registered name (``bindguard models list``) or an ``Encoder``.
        data: a registered data set, a ``.safetensors`` data file, or a ``Benchmark``.
        data_root: the folder of a data set read from files (``bindguard data list`` shows each layout).
        skip_bad_files: leave unreadable files of such a data set out (counted in a warning) instead of stopping.
        templates: a JSON file of prompt templates per modality for such a data set (default: the shipped ones).
        attacks: ``"standard"``, comma-separated attack names, an ``Ensemble``, or None for clean only.
        eps: budgets relative to each domain's range, e.g. ``["1/255", "4/255"]`` or ``"1/255,4/255"``.
        norm: ``linf`` or ``l2``.
        n: at most this many test samples per modality.
        modalities: ``"all"`` or names; "all" takes every modality both the encoder and the data have.
        steps: iterations of each gradient attack.
        square_queries: queries of the Square black-box check (0: skip it).
        checks: run the sanity checks (more steps, large eps, gradients, determinism).
        check_samples: samples the costlier checks use.
        batch_size: samples per forward pass and per attacked batch.
        seed: seeds data order, attacks and checks.
        precision: ``float32``, or ``bfloat16`` for the attack iterations (autocast, where the
            device supports it); decisions are re-made in float32 and disagreements flagged.
        weights: trained parts for an encoder built by name (e.g. TinyBind's ``--weights``).
        calibration: a calibration folder to apply.
        centers: a class-centers file, (C, K, D) description embeddings per class (UniBind-style,
            ``bindguard convert --centers``), scored instead of the prompt templates.
        center_rule: ``nearest`` (the class of the top-1 center) or ``mean`` (the mean of each class's K).
        device: where to run; default CUDA when available, else the CPU.
        out: folder for ``results.json`` and the resumable state.
        progress: optional ``callback(stage, done, total)``.

    Returns:
        ``Results`` with clean, retrieval and (with ``attacks``) robust rows.

    Raises:
        ConfigError, UnknownNameError, DataError: for bad options or data, before any slow work.
    """
    out = check_out(out)
    distributed.setup(None if device is None else str(device))
    check_data_name(data)
    check_seed(seed)
    check_count("n", n, 1, optional=True)
    check_count("batch_size", batch_size, 1)
    settings = None
    threats = parse_threats(eps, norm) if attacks is not None else []
    if attacks is not None:
        settings = robust_settings(
            attacks,
            threats,
            steps=steps,
            square_queries=square_queries,
            checks=checks,
            check_samples=check_samples,
            batch_size=batch_size,
            seed=seed,
            precision=precision,
        )
    torch.manual_seed(seed)
    model = with_expectation(load_encoder(encoder, weights=weights, calibration=calibration, device=device))
    chosen = choose_modalities(modalities, model)
    everything = isinstance(modalities, str) and modalities.strip().lower() == "all"
    files = FileOptions(data_root, skip_bad_files, templates)
    benchmark = load_data(data, model, chosen, split="test", limit=n, required=not everything, files=files)
    benchmark = with_class_centers(benchmark, model, centers, center_rule)
    chosen = [m for m in chosen if m in benchmark.data]
    fingerprints = data_fingerprints(benchmark, batch_size=batch_size)
    if settings is not None:
        fitting = fitting_batch_size(model, chosen, settings.batch_size)  # the request, lowered to fit a GPU
        settings = dataclasses.replace(settings, batch_size=fitting) if fitting != settings.batch_size else settings
        samples = max(len(benchmark.data[m].labels) for m in chosen)
        warn_if_slow(model, chosen, samples=samples, passes=passes_per_sample(settings, len(threats)))
    rows = evaluate_clean(model, benchmark, modalities=chosen, batch_size=batch_size, progress=progress)
    rows += caption_rows(model, benchmark, chosen, batch_size=batch_size)
    if settings is not None:
        run_config = {
            "model": model.identity,
            "data": data_name(data),
            "data_fingerprint": {m.value: fingerprints[m.value] for m in chosen},
            "n": n,
            "versions": state_versions(),
        }
        rows += evaluate_robust(
            model,
            benchmark,
            threats,
            modalities=chosen,
            settings=settings,
            state_directory=None if out is None else out / "state",
            run_config=run_config,
            progress=progress,
        )
        rows += caption_robust_rows(
            model,
            benchmark,
            threats,
            modalities=chosen,
            settings=settings,
            state_directory=None if out is None else out / "state",
            run_config=run_config,
        )
    run_settings = {
        "robust": None
        if settings is None
        else {
            "ensemble": settings.ensemble.name,
            "attacks": settings.ensemble.attack_names,
            "steps": settings.steps,
            "square_queries": settings.square_queries,
            "checks": settings.checks,
            "threats": [str(t) for t in threats],
            "precision": settings.precision,
        },
        "modalities": [m.value for m in chosen],
        "n": n,
        "split": "test",
        "weights": str(weights) if weights else "shipped",
        "calibration": str(calibration) if calibration else None,
        "centers": None if centers is None else {"file": str(centers), "rule": center_rule},
        "model_identity": model.identity,
        "eot_samples": EOT_SAMPLES if model.randomized else 1,
        "device": str(model.device),
    }
    results = Results.new(model=model.name, data=data_name(data), seed=seed, rows=rows, settings=run_settings)
    results.provenance = provenance(
        model=model,
        data=data_name(data),
        fingerprints=fingerprints,
        seed=seed,
        weights=weights,
        calibration=calibration,
    )
    if out is not None and distributed.current().main:
        results.write(out)
    distributed.barrier()  # results.json exists on return, whichever rank returns first
    return results


def estimate(
    encoder: Encoder | str = "tinybind",
    data: Benchmark | str = "builtin",
    *,
    data_root: str | Path | None = None,
    skip_bad_files: bool = False,
    templates: str | Path | None = None,
    attacks: str | Ensemble | None = "standard",
    eps: str | float | Sequence[str | float] = ("4/255",),
    norm: str = "linf",
    n: int | None = None,
    modalities: str | Sequence[str] = "all",
    steps: int = 100,
    square_queries: int = 1000,
    checks: bool = True,
    check_samples: int = 32,
    batch_size: int = 128,
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
    device: str | torch.device | None = None,
) -> CostEstimate:
    """Predict the wall time of ``evaluate`` with the same arguments, without running it.

    One batch per modality is timed (forward+backward) on the model exactly as it would run, and
    the passes the settings imply are counted; nothing is attacked and nothing is written.

    Example::

        cost = bindguard.estimate("tinybind", "builtin", attacks="standard", eps=["4/255"], n=1000)
        print(cost.least_seconds, cost.most_seconds)
    """
    check_data_name(data)
    check_count("n", n, 1, optional=True)
    check_count("batch_size", batch_size, 1)
    threats = parse_threats(eps, norm) if attacks is not None else []
    settings = None
    if attacks is not None:
        settings = robust_settings(
            attacks, threats, steps=steps, square_queries=square_queries, checks=checks,
            check_samples=check_samples, batch_size=batch_size, seed=0,
        )  # fmt: skip
    model = with_expectation(load_encoder(encoder, weights=weights, calibration=calibration, device=device))
    chosen = choose_modalities(modalities, model)
    everything = isinstance(modalities, str) and modalities.strip().lower() == "all"
    files = FileOptions(data_root, skip_bad_files, templates)
    benchmark = load_data(data, model, chosen, split="test", limit=n, required=not everything, files=files)
    samples = {m: len(benchmark.data[m].labels) for m in chosen if m in benchmark.data}
    processes = distributed.from_environment().size
    return estimate_cost(model, samples, settings, len(threats), batch_size=batch_size, processes=processes)
