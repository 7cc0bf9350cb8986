"""What every job does first: the device, the encoder, the data at the encoder's input spec, the attack settings.

Each check runs before any slow work, so a bad option fails in a second, not after an evaluation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bindguard._checks import check_count, check_seed
from bindguard._types import PERCEPTUAL_MODALITIES, Modality, parse_modalities
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark, ModalityData, check_data_source, load_dataset
from bindguard.data.rows import first_rows
from bindguard.encoders import ENCODERS, Encoder, create_encoder
from bindguard.encoders.class_centers import CENTER_RULES, load_class_centers
from bindguard.encoders.device import resolve_device
from bindguard.errors import ConfigError, DataError
from bindguard.evaluation.ensemble import Ensemble, parse_ensemble
from bindguard.evaluation.robust import RobustSettings


def check_out(out: str | Path | None) -> Path | None:
    """The output folder, checked to be creatable and writable before any slow work (nothing is created here)."""
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a folder path")
    existing = out
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if existing != out and not existing.is_dir():
        raise ConfigError(f"--out {out} cannot be created: {existing} is a file, not a folder; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out} cannot be written: no write permission on {existing}; give another path")
    return out


def load_encoder(
    encoder: Encoder | str,
    *,
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
    device: str | torch.device | None = None,
) -> Encoder:
    """A registered encoder by name (with ``weights`` and ``calibration`` applied), or the given one, on ``device``.

    ``weights`` is the encoder's checkpoint (a file or folder), passed to its factory as ``checkpoint``.
    An encoder given as an object stays where it is unless ``device`` is named.
    """
    if isinstance(encoder, Encoder):
        if weights is not None:
            raise ConfigError("weights apply to an encoder built by name; load them into your encoder yourself")
        if calibration is not None:
            from bindguard.encoders.calibrated import calibrate_encoder

            encoder = calibrate_encoder(encoder, calibration)
        return encoder if device is None else encoder.to(resolve_device(device))
    ENCODERS.get(encoder)  # an unknown name fails with a suggestion, before anything loads
    options = {"checkpoint": weights} if weights is not None else {}
    return create_encoder(encoder, calibration=calibration, device=resolve_device(device), **options)


def check_data_name(data: Benchmark | str | Path) -> None:
    """A registered data set name, a path to a ``.safetensors`` data file, or a ``Benchmark``; checked cheaply."""
    if not isinstance(data, Benchmark):
        check_data_source(data)


def data_name(data: Benchmark | str | Path) -> str:
    return data.name if isinstance(data, Benchmark) else str(data)


def choose_modalities(modalities: str | Sequence[str | Modality], encoder: Encoder) -> list[Modality]:
    """The perceptual modalities asked for that the encoder has ("all": every one it has)."""
    available = tuple(m for m in PERCEPTUAL_MODALITIES if m in encoder.modalities)  # the canonical order
    names = modalities if isinstance(modalities, str) else [Modality.parse(m).value for m in modalities]
    if isinstance(names, str) and names.strip().lower() == "all":
        return list(available)
    chosen = parse_modalities(names, available=PERCEPTUAL_MODALITIES)  # unknown names fail with the full list
    return parse_modalities([m.value for m in chosen], available=available)


@dataclass(frozen=True)
class FileOptions:
    """How to read a data set from the user's files (``bindguard data list``): its folder, and options."""

    data_root: str | Path | None = None
    skip_bad_files: bool = False
    templates: str | Path | None = None

    def options(self) -> dict:
        """The loader options that are set (a built-in data set takes none of them)."""
        chosen = {"data_root": self.data_root, "templates": None if self.templates is None else Path(self.templates)}
        return {k: v for k, v in chosen.items() if v is not None} | (
            {"skip_bad_files": True} if self.skip_bad_files else {}
        )


def load_data(
    data: Benchmark | str,
    encoder: Encoder,
    modalities: Sequence[Modality],
    *,
    split: str,
    limit: int | None,
    required: bool,
    files: FileOptions | None = None,
) -> Benchmark:
    """The data for ``modalities``, rendered at the encoder's input spec where the data set can render.

    Args:
        data: a registered name, a ``.safetensors`` data file, or a loaded ``Benchmark``.
        encoder: whose ``input_spec`` sets shapes and the audio sample rate.
        modalities: the ones wanted.
        split: ``train`` or ``test``.
        limit: at most this many samples per modality.
        required: every modality must be present (the user named them); otherwise absent ones are dropped.
        files: where a data set read from files lives, and how to treat its unreadable files.

    Raises:
        DataError: when a required modality is absent.
    """
    if isinstance(data, Benchmark):
        benchmark = _limited(data, modalities, limit)
    else:
        specs = {m: encoder.input_spec(m) for m in modalities}
        rates = {spec.sample_rate for spec in specs.values() if spec.sample_rate}
        # a user file is checked against the spec when it opens, naming the file and tensor
        checks = (
            {"input_shapes": {m: s.shape for m, s in specs.items()}, "domains": {m: s.domain for m, s in specs.items()}}
            if str(data).endswith(".safetensors")
            else {}
        )
        benchmark = load_dataset(
            str(data),
            split=split,
            modalities=list(modalities),
            limit=limit,
            shapes={m: spec.shape for m, spec in specs.items()},
            sample_rate=rates.pop() if rates else None,
            **checks,
            **(files.options() if files is not None else {}),
        )
    absent = [m.value for m in modalities if m not in benchmark.data]
    if absent and required:
        raise DataError(
            f"data {data_name(data)!r} has no {', '.join(absent)} samples; "
            f"choose from: {', '.join(m.value for m in benchmark.modalities)}"
        )
    return benchmark


def _limited(benchmark: Benchmark, modalities: Sequence[Modality], limit: int | None) -> Benchmark:
    def first(item: ModalityData) -> ModalityData:
        if limit is None:
            return item
        captions = None if item.captions is None else item.captions[:limit]
        return ModalityData(
            first_rows(item.inputs, limit), item.labels[:limit], item.instance_ids[:limit], item.source, captions
        )

    data = {m: first(item) for m, item in benchmark.data.items() if m in modalities}
    templates = {m: t for m, t in benchmark.templates.items() if m in data}
    return Benchmark(benchmark.name, benchmark.split, benchmark.class_names, templates, data, benchmark.centers)


def parse_threats(eps: str | float | Sequence[str | float], norm: str) -> list[ThreatModel]:
    """Budgets relative to each domain's range: ``"1/255,4/255"``, ``["4/255"]`` or ``[0.0157]``."""
    if isinstance(eps, (int, float)):
        budgets: list[str | float] = [eps]
    else:
        budgets = [part for part in eps.split(",") if part.strip()] if isinstance(eps, str) else list(eps)
    if not budgets:
        raise ConfigError("--eps is empty; give budgets such as 1/255,2/255,4/255")
    return [ThreatModel.parse(norm, budget) for budget in budgets]


def robust_settings(
    attacks: str | Ensemble,
    threats: Sequence[ThreatModel],
    *,
    steps: int,
    square_queries: int,
    checks: bool,
    check_samples: int,
    batch_size: int,
    seed: int,
    precision: str = "float32",
) -> RobustSettings:
    """Parse and check the attack options; unsupported norms fail here, by attack name."""
    for name, value, least in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("square_queries", square_queries, 0),
        ("check_samples", check_samples, 1),
    ):
        check_count(name, value, least)
    check_seed(seed)
    ensemble = parse_ensemble(attacks) if isinstance(attacks, str) else attacks
    for member in ensemble.members:
        member.build(threats[0], steps=steps, seed=seed)  # e.g. APGD's least step count fails here, not mid-run
    return RobustSettings(
        ensemble=ensemble,
        steps=steps,
        square_queries=square_queries,
        checks=checks,
        check_samples=check_samples,
        batch_size=batch_size,
        seed=seed,
        precision=precision,
    )


def with_class_centers(
    benchmark: Benchmark, encoder: Encoder, centers: str | Path | None, rule: str = "nearest"
) -> Benchmark:
    """``benchmark`` scored against a class-centers file (``bindguard convert --centers``) instead of its templates.

    Raises:
        DataError: for centers of other classes (names or order) or another embedding size.
        ConfigError: for an unknown rule.
    """
    if centers is None:
        return benchmark
    if rule not in CENTER_RULES:
        raise ConfigError(f"--center-rule must be one of {', '.join(CENTER_RULES)}, got {rule!r}")
    loaded = load_class_centers(centers)
    if loaded.class_names != tuple(benchmark.class_names):
        raise DataError(
            f"--centers {centers} holds classes {list(loaded.class_names)[:4]}…, the data {benchmark.name!r} has "
            f"{list(benchmark.class_names)[:4]}…; fix: make the centers for these classes, in this order"
        )
    if loaded.dim != encoder.embed_dim:
        raise DataError(
            f"--centers {centers} are {loaded.dim}-d, {encoder.name} embeds in {encoder.embed_dim}-d; "
            "fix: make the centers with this encoder"
        )
    fixed = F.normalize(loaded.centers.float(), dim=-1) if rule == "nearest" else loaded.mean_centers()
    return dataclasses.replace(benchmark, centers=fixed)
