"""Fit one modality's calibration on adversarial examples, backbone weights and semantic centers frozen.

Adversarial examples are made on the fly by PGD within the recipe's threat model, maximising
the objective's inner loss (zero-shot CE for ``ce``, embedding distortion for ``l2``/``infonce``):

- ``static``: against the frozen, uncalibrated encoder, once, then reused every epoch (cheap;
  for head-only methods the frozen embeddings are cached too, so training costs seconds);
- ``adaptive``: against the current calibrated model at every step (min-max adversarial training).

Training is deterministic for a recipe and seed; a checkpoint is written after every epoch, and
a run resumed from it ends with the same calibration as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load, save

from bindguard._checks import check_count, check_number, check_seed
from bindguard._io import atomic_write_bytes
from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.attacks.pgd import PGD
from bindguard.calibration import Calibration, CalibrationConfig, parse_method, read_calibrations, write_calibrations
from bindguard.calibration.module import check_options
from bindguard.data import Benchmark
from bindguard.data.rows import Rows, fingerprint_rows
from bindguard.encoders import Encoder
from bindguard.encoders.base import non_finite_tensor
from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration
from bindguard.encoders.centers import benchmark_centers
from bindguard.errors import ConfigError, DataError, DivergedError
from bindguard.objectives import EmbeddingDistortion, ObjectiveContext, ZeroShotCE
from bindguard.objectives.calibration import OBJECTIVES, CalibrationBatch, calibration_loss, check_objective

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
MODES = ("adaptive", "static")
CHECKPOINT_FORMAT = "bindguard-calibration-checkpoint/1"


@dataclass(frozen=True)
class CalibrationRecipe:
    """How to calibrate; recorded in the calibration's ``config.json``.

    Attributes:
        method: parts joined by "+" (``bindguard.calibration.PARTS``).
        objective: ``ce``, ``l2``, ``infonce`` or ``clean`` (see ``objectives/calibration.py``).
        mode: ``adaptive`` (attack the current calibrated model) or ``static`` (the frozen one).
        norm, eps: the training threat model (eps relative to the domain's range).
        attack_steps: PGD steps per adversarial example; step size 2.5 eps / steps.
        epochs, batch_size, learning_rate, weight_decay: AdamW with a cosine decay.
        reg: weight of the modality-consistency regulariser.
        logit_scale: of the CE losses; None uses the encoder's own (``Encoder.logit_scale``).
        temperature: of the InfoNCE loss.
        options: method sizes (``rank``, ``hidden``, ``width``, ``noise``).
        seed: seeds the data order, the attacks and the initialisation.
    """

    method: str = "purifier+lora"
    objective: str = "ce"
    mode: str = "adaptive"
    norm: str = "linf"
    eps: str = "4/255"
    attack_steps: int = 2
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    reg: float = 1.0
    logit_scale: float | None = None
    temperature: float = 0.1
    options: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self.check()  # a recipe that exists is a valid one

    def check(self) -> None:
        """Every field's type and range; non-finite numbers are refused (they would train NaN calibrations)."""
        for name in ("method", "objective", "mode", "norm", "eps"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"--{name} must be text, got {getattr(self, name)!r}")
        parse_method(self.method)
        check_objective(self.objective)
        if self.mode not in MODES:
            raise ConfigError(f"unknown calibration mode {self.mode!r}; allowed: {', '.join(MODES)}")
        check_count("epochs", self.epochs, 1)
        check_count("attack_steps", self.attack_steps, 1)
        check_count("batch_size", self.batch_size, 2)
        check_number("learning_rate", self.learning_rate, inclusive=False)
        check_number("weight_decay", self.weight_decay)
        check_number("reg", self.reg)
        check_number("temperature", self.temperature, inclusive=False)
        if self.logit_scale is not None:
            check_number("logit_scale", self.logit_scale, inclusive=False)
        check_options(self.options)
        check_seed(self.seed)
        ThreatModel.parse(self.norm, self.eps)

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel.parse(self.norm, self.eps)


@dataclass
class CalibrationOutcome:
    calibration: Calibration
    seconds: float
    losses: list[float]


def _scale(recipe: CalibrationRecipe, encoder: Encoder, modality: Modality) -> float:
    return recipe.logit_scale if recipe.logit_scale is not None else encoder.logit_scale(modality)


def _attack(recipe: CalibrationRecipe, step: int) -> PGD:
    inner = ZeroShotCE() if OBJECTIVES[recipe.objective][1] == "ce" else EmbeddingDistortion()
    steps = recipe.attack_steps
    return PGD(
        recipe.threat,
        objective=inner,
        steps=steps,
        step_size=2.5 * recipe.threat.eps / steps,
        early_stop=False,  # training wants the strongest example in the ball, not the first success
        seed=recipe.seed * 1_000_003 + step,
    )


@torch.no_grad()
def _raw_embed(encoder: Encoder, modality: Modality, x: Rows, batch_size: int = 128) -> torch.Tensor:
    """Unnormalised embeddings, the input of a post-encoder head, on the encoder's device."""
    device = encoder.device
    return torch.cat(
        [
            encoder.encode_modality(modality, x[i : i + batch_size].to(device), normalize=False, validate=False)
            for i in range(0, len(x), batch_size)
        ]
    )


def _static_examples(
    base: Encoder,
    modality: Modality,
    x: Rows,
    labels: torch.Tensor,
    centers: torch.Tensor,
    frozen: torch.Tensor,
    recipe: CalibrationRecipe,
    report: Progress,
) -> torch.Tensor:
    adversarial = []
    batches = math.ceil(len(x) / recipe.batch_size)
    for number in range(batches):
        report(f"{modality.value} static examples", number, batches)
        index = torch.arange(number * recipe.batch_size, min((number + 1) * recipe.batch_size, len(x)))
        context = ObjectiveContext(
            labels=labels[index], centers=centers, clean=frozen[index], logit_scale=_scale(recipe, base, modality)
        )
        adversarial.append(_attack(recipe, number).run(base, modality, x[index], context).adversarial)
    return torch.cat(adversarial)


def _learning_rate(recipe: CalibrationRecipe, step: int, total: int) -> float:
    return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * step / total))


def _save_checkpoint(
    path: Path,
    calibration: Calibration,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    recipe: dict,
    losses: list[float],
) -> None:
    state = optimizer.state_dict()
    tensors = {f"calibration.{k}": v.detach().contiguous() for k, v in calibration.state_dict().items()}
    for index, values in state["state"].items():
        tensors |= {f"optimizer.{index}.{k}": v.detach().contiguous() for k, v in values.items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "epoch": str(epoch),
        "recipe": json.dumps(recipe, sort_keys=True),
        "param_groups": json.dumps(state["param_groups"]),
        "losses": json.dumps(losses),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _load_checkpoint(
    path: Path, calibration: Calibration, optimizer: torch.optim.Optimizer, recipe: dict
) -> tuple[int, list[float]]:
    """Restore a checkpoint; returns (epochs done, losses so far).

    Raises:
        DataError: for a corrupt or foreign file, missing metadata, non-finite tensors.
        ConfigError: for a checkpoint of another recipe (or other training data).
    """
    fix = "fix: delete it to start this modality over"
    try:
        blob = path.read_bytes()
        tensors = load(blob)
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
        metadata = header.get("__metadata__", {})
    except (OSError, SafetensorError, ValueError, AttributeError) as error:
        raise DataError(f"calibration checkpoint {path} is corrupt ({error}); {fix}") from error
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path} is not a calibration checkpoint; fix: delete it or choose another --out folder")
    try:
        saved_recipe = json.loads(metadata["recipe"])
        epoch, losses = int(metadata["epoch"]), json.loads(metadata["losses"])
        groups = json.loads(metadata["param_groups"])
    except (KeyError, ValueError, TypeError) as error:
        raise DataError(f"calibration checkpoint {path} has missing or malformed metadata ({error}); {fix}") from None
    if saved_recipe != json.loads(json.dumps(recipe, sort_keys=True)):
        changed = sorted(k for k in set(saved_recipe) | set(recipe) if saved_recipe.get(k) != recipe.get(k))
        raise ConfigError(
            f"the checkpoint {path} was made with another recipe or other data (changed: {', '.join(changed)}); "
            "fix: rerun with the same options and data, delete the checkpoint, or choose another --out folder"
        )
    if not isinstance(losses, list) or not 0 <= epoch <= saved_recipe.get("epochs", 0):
        raise DataError(f"calibration checkpoint {path} records an impossible epoch {epoch}; {fix}")
    broken = non_finite_tensor(tensors)
    if broken is not None:
        raise DataError(f"calibration checkpoint {path}: tensor {broken!r} is not finite; {fix}")
    state = {k[len("calibration.") :]: v for k, v in tensors.items() if k.startswith("calibration.")}
    try:
        calibration.load_state_dict(state)
        optimizer_state: dict = {"state": {}, "param_groups": groups}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer_state["state"].setdefault(int(index), {})[name] = value
        optimizer.load_state_dict(optimizer_state)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        message = " ".join(str(error).split())[:200]
        raise DataError(f"calibration checkpoint {path} does not fit this calibration ({message}); {fix}") from None
    return epoch, losses


def _diverged(
    modality: Modality,
    recipe: CalibrationRecipe,
    epoch: int,
    step: int,
    loss: float,
    checkpoint: Path | None,
    *,
    tensor: str | None = None,
) -> None:
    """Stop training that went non-finite; the checkpoint of the last finished epoch stays as it was."""
    what = f"parameter {tensor!r}" if tensor else f"loss {loss}"
    kept = (
        f"the checkpoint of the last good epoch is kept in {checkpoint}"
        if checkpoint is not None and checkpoint.is_file()
        else "nothing of it was saved"
    )
    raise DivergedError(
        f"calibration of {modality.value} went non-finite at epoch {epoch + 1}, step {step + 1} ({what}); {kept}; "
        f"fix: lower --learning-rate (now {recipe.learning_rate:g}) or --reg (now {recipe.reg:g})"
    )


def calibrate_modality(
    base: Encoder,
    modality: Modality,
    x: Rows,
    labels: torch.Tensor,
    centers: torch.Tensor,
    recipe: CalibrationRecipe,
    *,
    checkpoint: Path | None = None,
    progress: Progress | None = None,
    data_fingerprint: str | None = None,
) -> CalibrationOutcome:
    """Train one modality's calibration of the frozen ``base``.

    Args:
        base: the frozen encoder (its weights are never changed).
        modality: the tower to calibrate.
        x, labels: raw training inputs and classes (a train split, not the evaluation split).
        centers: (C, D) frozen semantic centers of the classes.
        recipe: method, objective, mode, threat and optimisation settings.
        checkpoint: a file to save after each epoch and resume from.
        progress: optional ``callback(stage, done, total)``.
        data_fingerprint: ``fingerprint_rows(x, labels)`` when the caller has it (it keys the resume).

    Returns:
        The trained calibration (eval mode, frozen), its wall time and per-epoch mean losses.
    """
    recipe.check()
    report = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    scale = _scale(recipe, base, modality)
    device = base.device
    centers = centers.to(device)  # inputs stay where they are and move batch by batch
    torch.manual_seed(recipe.seed)
    data_fingerprint = data_fingerprint or fingerprint_rows(x, labels)
    # what was trained on, by content: other data under the same path never resumes a checkpoint
    recipe_record = asdict(recipe) | {"modality": modality.value, "n": len(x), "data": data_fingerprint}
    config = CalibrationConfig(
        modality=modality.value,
        method="+".join(parse_method(recipe.method)),
        objective=recipe.objective,
        threat={"norm": recipe.threat.norm, "eps": recipe.threat.eps},
        options=dict(recipe.options),
        recipe=recipe_record,
    )
    calibration = build_calibration(base, config)
    calibration.requires_grad_(True)
    calibration.train()
    model = CalibratedEncoder(base, {modality: calibration})
    optimizer = torch.optim.AdamW(calibration.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    raw_clean = _raw_embed(base, modality, x)
    frozen = F.normalize(raw_clean, dim=-1)  # f(x), the frozen clean embeddings
    uses_attack = OBJECTIVES[recipe.objective][0]
    head_only = calibration.purifier is None and calibration.override is None
    epochs_done, losses = 0, []
    if checkpoint is not None and checkpoint.is_file():
        epochs_done, losses = _load_checkpoint(checkpoint, calibration, optimizer, recipe_record)

    cached = None
    if epochs_done < recipe.epochs and uses_attack and recipe.mode == "static":
        cached = _static_examples(base, modality, x, labels, centers, frozen, recipe, report)
    features = None
    if epochs_done < recipe.epochs and head_only and (cached is not None or not uses_attack):
        # the head is the only trainable part and its inputs never change: embed them once
        with torch.no_grad():
            features = (_raw_embed(base, modality, cached) if cached is not None else None, raw_clean)

    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    for epoch in range(epochs_done, recipe.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(recipe.seed * 7919 + epoch))
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            report(f"{modality.value} calibrate", global_step, total)
            index = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            batch_x, batch_labels, batch_frozen = x[index].to(device), labels[index].to(device), frozen[index]
            if features is not None:
                adversarial_raw, clean_raw = features
                pieces = [clean_raw[index]] + ([adversarial_raw[index]] if adversarial_raw is not None else [])
                embedded = F.normalize(calibration.head(torch.cat(pieces)), dim=-1)
            else:
                inputs = [batch_x]
                if uses_attack and cached is not None:
                    inputs.append(cached[index].to(device))
                elif uses_attack:
                    context = ObjectiveContext(
                        labels=batch_labels, centers=centers, clean=batch_frozen, logit_scale=scale
                    )
                    calibration.requires_grad_(False)  # the attack needs input gradients only
                    inputs.append(_attack(recipe, global_step).run(model, modality, batch_x, context).adversarial)
                    calibration.requires_grad_(True)
                embedded = model.encode_modality(modality, torch.cat(inputs), validate=False)
            clean, adversarial = embedded[: len(index)], (embedded[len(index) :] if uses_attack else None)
            loss = calibration_loss(
                recipe.objective,
                CalibrationBatch(adversarial, clean, batch_frozen, centers, batch_labels),
                reg=recipe.reg,
                scale=scale,
                temperature=recipe.temperature,
            )
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, global_step, total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                _diverged(modality, recipe, epoch, step, value, checkpoint)
            epoch_loss += value * len(index)
        broken = non_finite_tensor(dict(calibration.named_parameters()))
        if broken is not None:  # checked before the checkpoint: a saved checkpoint is always a good one
            _diverged(modality, recipe, epoch, steps_per_epoch - 1, float("nan"), checkpoint, tensor=broken)
        losses.append(epoch_loss / len(x))
        logger.info("%s %s epoch %d/%d: loss %.4f", modality.value, config.method, epoch + 1, recipe.epochs, losses[-1])
        if checkpoint is not None:
            _save_checkpoint(checkpoint, calibration, optimizer, epoch + 1, recipe_record, losses)
    report(f"{modality.value} calibrate", total, total)
    calibration.requires_grad_(False)
    calibration.eval()
    seconds = time.perf_counter() - started
    trainable = calibration.trainable_parameters()
    calibration.config = CalibrationConfig(
        **(
            config.to_json()
            | {
                "trainable_parameters": trainable,
                "recipe": recipe_record
                | {"train_seconds": round(seconds, 1), "trainable_fraction": trainable / base.num_parameters()},
            }
        )
    )
    return CalibrationOutcome(calibration, seconds, losses)


def calibrate_modalities(
    base: Encoder,
    train: Benchmark,
    modalities: list[Modality],
    recipe: CalibrationRecipe,
    out: Path,
    *,
    progress: Progress | None = None,
) -> CalibratedEncoder:
    """Calibrate several modalities into the folder ``out``, one after another.

    Each finished modality is saved at once (``config.json`` + ``model.safetensors``), so an
    interrupted run keeps it; a modality already in ``out`` with the same recipe is not retrained,
    and one interrupted mid-way resumes from ``out/checkpoints/<modality>.safetensors``.
    """
    out = Path(out)
    created = not out.exists()
    try:
        _calibrate_into(base, train, modalities, recipe, out, progress)
    finally:  # a run that failed before saving anything leaves no empty folders behind
        for folder in (out / "checkpoints", out) if created else (out / "checkpoints",):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    calibrated = CalibratedEncoder.from_pretrained(base, out)
    calibrated.calibrations = torch.nn.ModuleDict(
        {m: c for m, c in calibrated.calibrations.items() if Modality(m) in modalities}
    )
    return calibrated


def _calibrate_into(
    base: Encoder,
    train: Benchmark,
    modalities: list[Modality],
    recipe: CalibrationRecipe,
    out: Path,
    progress: Progress | None,
) -> None:
    """Train and save each modality not already in ``out`` for this recipe and data."""
    done: dict[str, CalibrationConfig] = {}
    if (out / "config.json").is_file():
        header, done, _ = read_calibrations(out)
        if header["encoder"] != base.identity or header["embed_dim"] != base.embed_dim:
            raise DataError(
                f"{out} holds a calibration of {header['encoder']!r}, not of the loaded {base.identity!r}; "
                "fix: choose another --out folder"
            )
    for modality in modalities:
        data = train.data[modality]
        centers = benchmark_centers(base, train, modality)
        previous = done.get(modality.value)
        fingerprint = fingerprint_rows(data.inputs, data.labels)
        wanted = asdict(recipe) | {"modality": modality.value, "n": len(data), "data": fingerprint}
        checkpoint = out / "checkpoints" / f"{modality.value}.safetensors"
        if previous is not None and {k: previous.recipe.get(k) for k in wanted} == wanted:
            checkpoint.unlink(missing_ok=True)  # saved, then interrupted before its checkpoint was removed
            continue
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        outcome = calibrate_modality(
            base,
            modality,
            data.inputs,
            data.labels,
            centers,
            recipe,
            checkpoint=checkpoint,
            progress=progress,
            data_fingerprint=fingerprint,
        )
        write_calibrations(
            out,
            encoder=base.identity,
            embed_dim=base.embed_dim,
            encoder_parameters=base.num_parameters(),
            modules={modality.value: outcome.calibration},
        )
        checkpoint.unlink(missing_ok=True)
