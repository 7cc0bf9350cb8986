"""Fit one modality's calibration on adversarial examples, backbone weights and semantic centers frozen.

Adversarial examples are made on the fly by PGD within the recipe's threat model, maximising
the objective's inner loss (zero-shot CE for ``ce``, embedding distortion for ``l2``/``infonce``):

- ``static``: against the frozen, uncalibrated encoder, once, then reused every epoch (cheap;
  for head-only methods the frozen embeddings are cached too, so training costs seconds);
- ``adaptive``: against the current calibrated model at every step (min-max adversarial training).

Training is deterministic for a recipe and seed; a checkpoint is written after every epoch, and
a run resumed from it ends with the same calibration as an uninterrupted one.

In a launched run (torchrun) each rank trains on its contiguous share of every batch under
DistributedDataParallel, which averages the gradients; each share's loss is weighted by its size,
and random starts are drawn for the whole batch and sliced, so N ranks take the steps of one
process with the same batches, up to the order of floating-point sums.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch.nn.parallel import DistributedDataParallel

from bindguard import distributed
from bindguard._io import atomic_write_bytes
from bindguard._types import Modality
from bindguard.attacks.pgd import PGD
from bindguard.calibration import Calibration, CalibrationConfig, parse_method, read_calibrations, write_calibrations
from bindguard.data import Benchmark
from bindguard.data.rows import Rows, fingerprint_rows
from bindguard.encoders import Encoder
from bindguard.encoders.base import non_finite_tensor
from bindguard.encoders.calibrated import CalibratedEncoder, build_calibration
from bindguard.encoders.centers import benchmark_centers
from bindguard.errors import ConfigError, DataError, DivergedError
from bindguard.objectives import EmbeddingDistortion, ObjectiveContext, ZeroShotCE
from bindguard.objectives.calibration import OBJECTIVES, CalibrationBatch, calibration_loss
from bindguard.training.recipe import CalibrationRecipe, Phase

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
CHECKPOINT_FORMAT = "bindguard-calibration-checkpoint/1"


@dataclass
class CalibrationOutcome:
    calibration: Calibration
    seconds: float
    losses: list[float]


def _scale(recipe: CalibrationRecipe, encoder: Encoder, modality: Modality) -> float:
    return recipe.logit_scale if recipe.logit_scale is not None else encoder.logit_scale(modality)


def _attack(phase: Phase, seed: int, step: int, within: tuple[int, int] | None = None) -> PGD:
    inner = ZeroShotCE() if OBJECTIVES[phase.objective][1] == "ce" else EmbeddingDistortion()
    steps = phase.attack_steps
    return PGD(
        phase.threat,
        objective=inner,
        steps=steps,
        step_size=2.5 * phase.threat.eps / steps,
        early_stop=False,  # training wants the strongest example in the ball, not the first success
        seed=seed * 1_000_003 + step,
        within=within,
    )


def _noisy(
    encoder: Encoder,
    modality: Modality,
    phase: Phase,
    x: torch.Tensor,
    seed: int,
    step: int,
    within: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A uniform random point of the phase's ball around each input, inside the domain (``distill``)."""
    spec = encoder.input_spec(modality)
    generator = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + step)
    return x + phase.threat.random_delta(x, spec, generator, within=within)


class _Embedder(torch.nn.Module):
    """The calibrated embedding as a module whose only parameters are the calibration's: what
    DistributedDataParallel wraps, so it syncs the calibration's gradients and never the frozen backbone."""

    def __init__(self, model: CalibratedEncoder, modality: Modality):
        super().__init__()
        self.calibration = model.calibrations[modality.value]
        self.model = [model]  # a list: the backbone is not registered as a submodule
        self.modality = modality

    def forward(self, inputs: torch.Tensor, head_only: bool = False) -> torch.Tensor:
        if head_only:  # the inputs are the frozen encoder's raw embeddings
            return F.normalize(self.calibration.head(inputs), dim=-1)
        return self.model[0].encode_modality(self.modality, inputs, validate=False)


def _synced(embedder: _Embedder, world: distributed.World) -> torch.nn.Module:
    """The embedder, wrapped for gradient averaging across ranks when there are several."""
    if world.size == 1:
        return embedder
    device = next(embedder.calibration.parameters()).device
    return DistributedDataParallel(
        embedder, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
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
    phase: Phase,
    report: Progress,
) -> torch.Tensor:
    """Examples against the frozen encoder, made once; a launched run's ranks make a batch each and share them."""
    mine = {}
    batches = math.ceil(len(x) / recipe.batch_size)
    for number, positions in distributed.my_batches(len(x), recipe.batch_size):
        report(f"{modality.value} {phase.name} static examples", number, batches)
        index = torch.arange(positions.start, positions.stop)
        context = ObjectiveContext(
            labels=labels[index], centers=centers, clean=frozen[index], logit_scale=_scale(recipe, base, modality)
        )
        attack = _attack(phase, recipe.seed, number)
        mine[number] = attack.run(base, modality, x[index], context).adversarial.cpu()
    return torch.cat(distributed.gather_batches(mine))


def _learning_rate(phase: Phase, step: int, total: int) -> float:
    """Cosine decay from the phase's learning rate over the phase's steps."""
    return phase.learning_rate * 0.5 * (1 + math.cos(math.pi * step / total))


def _train_only(calibration: Calibration, parts: tuple[str, ...]) -> None:
    """Let gradients reach the parts a phase trains; the others keep their values (AdamW skips them)."""
    modules = {"purifier": calibration.purifier, "floor": calibration.floor}
    modules |= {"lora": calibration.override, "finetune": calibration.override}
    modules |= {"head": calibration.head, "residual-head": calibration.head}
    for module in modules.values():
        if module is not None:
            module.requires_grad_(any(modules[name] is module for name in parts))


def _save_checkpoint(
    path: Path,
    calibration: Calibration,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    recipe: dict,
    losses: list[float],
    seconds: float,
) -> None:
    """``seconds``: training time up to the end of ``epoch``, over every run that trained it."""
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
        "seconds": repr(float(seconds)),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _load_checkpoint(
    path: Path, calibration: Calibration, optimizer: torch.optim.Optimizer, recipe: dict, total_epochs: int
) -> tuple[int, list[float], float]:
    """Restore a checkpoint; returns (epochs done, losses so far, training seconds so far).

    A checkpoint written before checkpoints recorded their time counts as 0 seconds, with a warning.

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
        seconds = float(metadata.get("seconds", "0"))
    except (KeyError, ValueError, TypeError) as error:
        raise DataError(f"calibration checkpoint {path} has missing or malformed metadata ({error}); {fix}") from None
    if saved_recipe != json.loads(json.dumps(recipe, sort_keys=True)):
        changed = sorted(k for k in set(saved_recipe) | set(recipe) if saved_recipe.get(k) != recipe.get(k))
        raise ConfigError(
            f"the checkpoint {path} was made with another recipe or other data (changed: {', '.join(changed)}); "
            "fix: rerun with the same options and data, delete the checkpoint, or choose another --out folder"
        )
    if not isinstance(losses, list) or not 0 <= epoch <= total_epochs:
        raise DataError(f"calibration checkpoint {path} records an impossible epoch {epoch}; {fix}")
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(f"calibration checkpoint {path} records an impossible training time {seconds}; {fix}")
    if "seconds" not in metadata:
        logger.warning("%s does not record its training time: train_seconds counts this run's epochs only", path)
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
    return epoch, losses, seconds


def _diverged(
    modality: Modality,
    phase: Phase,
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
        f"calibration of {modality.value} went non-finite in phase {phase.name!r} at epoch {epoch + 1}, "
        f"step {step + 1} ({what}); {kept}; "
        f"fix: lower --learning-rate (now {phase.learning_rate:g}) or --reg (now {phase.reg:g})"
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
        The trained calibration (eval mode, frozen), its training time (a resumed run adds the time its
        checkpoint records) and per-epoch mean losses.
    """
    recipe = recipe.for_modality(modality)  # the recipe's overrides for this modality, if any
    phases = recipe.schedule()
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
        objective=recipe.objectives,
        threat={"norm": recipe.threat.norm, "eps": recipe.threat.eps},
        options=dict(recipe.options),
        recipe=recipe_record,
    )
    calibration = build_calibration(base, config)
    calibration.requires_grad_(True)
    calibration.train()
    model = CalibratedEncoder(base, {modality: calibration})
    optimizer = torch.optim.AdamW(
        calibration.parameters(), lr=phases[0].learning_rate, weight_decay=recipe.weight_decay
    )
    raw_clean = _raw_embed(base, modality, x)
    frozen = F.normalize(raw_clean, dim=-1)  # f(x), the frozen clean embeddings
    head_only = calibration.purifier is None and calibration.floor is None and calibration.override is None
    epochs_done, losses, earlier = 0, [], 0.0
    if checkpoint is not None and checkpoint.is_file():
        epochs_done, losses, earlier = _load_checkpoint(
            checkpoint, calibration, optimizer, recipe_record, recipe.total_epochs
        )

    def elapsed() -> float:
        """Training seconds so far: the earlier runs' finished epochs and this run's time."""
        return earlier + time.perf_counter() - started

    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = recipe.total_epochs * steps_per_epoch
    first_epoch = 0  # of the phase, counted over the whole recipe
    for phase in phases:
        phase_epochs = range(max(first_epoch, epochs_done), first_epoch + phase.epochs)
        if phase_epochs:
            _train_phase(
                model, modality, phase, phase_epochs, first_epoch, x, labels, frozen, raw_clean, centers, recipe,
                optimizer=optimizer, scale=scale, steps_per_epoch=steps_per_epoch, total=total, head_only=head_only,
                losses=losses, checkpoint=checkpoint, recipe_record=recipe_record, report=report, elapsed=elapsed,
            )  # fmt: skip
        first_epoch += phase.epochs
    report(f"{modality.value} calibrate", total, total)
    calibration.requires_grad_(False)
    calibration.eval()
    seconds = elapsed()
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


def _train_phase(
    model: CalibratedEncoder,
    modality: Modality,
    phase: Phase,
    epochs: range,
    first_epoch: int,
    x: Rows,
    labels: torch.Tensor,
    frozen: torch.Tensor,
    raw_clean: torch.Tensor,
    centers: torch.Tensor,
    recipe: CalibrationRecipe,
    *,
    optimizer: torch.optim.Optimizer,
    scale: float,
    steps_per_epoch: int,
    total: int,
    head_only: bool,
    losses: list[float],
    checkpoint: Path | None,
    recipe_record: dict,
    report: Progress,
    elapsed: Callable[[], float],
) -> None:
    """Train ``epochs`` (numbered over the whole recipe) of one phase, a checkpoint after each."""
    base, calibration = model.base, model.calibrations[modality.value]
    device = base.device
    examples = OBJECTIVES[phase.objective][0]  # "attack", "noise" or None
    world = distributed.current()
    if world.size > 1 and phase.objective == "infonce":
        raise ConfigError(
            "objective 'infonce' contrasts each sample with the rest of its batch, which a launched run splits "
            "among its processes; train it without torchrun, or choose ce, l2 or stable"
        )
    if world.size > 1 and (recipe.batch_size < world.size or 0 < len(x) % recipe.batch_size < world.size):
        raise ConfigError(
            f"{world.size} processes need at least one sample each of every batch, but batches of "
            f"{recipe.batch_size} over {len(x)} samples leave {len(x) % recipe.batch_size or recipe.batch_size} in one; "
            "fix: another --batch-size or --limit, or fewer processes"
        )
    _train_only(calibration, phase.train)
    embedder = _synced(_Embedder(model, modality), world)  # per phase: the parts that train may change
    cached = None
    if examples == "attack" and phase.mode == "static":
        cached = _static_examples(base, modality, x, labels, centers, frozen, recipe, phase, report)
    features = None
    if head_only and (cached is not None or examples is None):
        # the head is the only trainable part and its inputs never change: embed them once
        with torch.no_grad():
            features = (_raw_embed(base, modality, cached) if cached is not None else None, raw_clean)
    # the clean embedding z(x) enters the loss only through the clean objective or the regulariser:
    # without them, embedding the clean half of the batch would only slow training (FARE runs reg 0)
    with_clean = examples is None or phase.reg != 0
    phase_steps = phase.epochs * steps_per_epoch
    for epoch in epochs:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(recipe.seed * 7919 + epoch))
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            report(f"{modality.value} calibrate", global_step, total)  # one bar over every phase
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            mine = distributed.share(len(batch), world)  # all of it in one process
            within = (mine.start, len(batch)) if world.size > 1 else None
            index = batch[mine]
            batch_x, batch_labels, batch_frozen = x[index].to(device), labels[index].to(device), frozen[index]
            if features is not None:
                adversarial_raw, clean_raw = features
                pieces = [clean_raw[index]] if with_clean else []
                pieces += [adversarial_raw[index]] if adversarial_raw is not None else []
                embedded = embedder(torch.cat(pieces), head_only=True)
            else:
                inputs = [batch_x] if with_clean else []
                if cached is not None:
                    inputs.append(cached[index].to(device))
                elif examples == "noise":
                    inputs.append(_noisy(base, modality, phase, batch_x, recipe.seed, global_step, within))
                elif examples == "attack":
                    context = ObjectiveContext(
                        labels=batch_labels, centers=centers, clean=batch_frozen, logit_scale=scale
                    )
                    calibration.requires_grad_(False)  # the attack needs input gradients only
                    attack = _attack(phase, recipe.seed, global_step, within)
                    inputs.append(attack.run(model, modality, batch_x, context).adversarial)
                    _train_only(calibration, phase.train)
                embedded = embedder(torch.cat(inputs))
            clean = embedded[: len(index)] if with_clean else None
            adversarial = embedded[len(index) if with_clean else 0 :] if examples is not None else None
            loss = calibration_loss(
                phase.objective,
                CalibrationBatch(adversarial, clean, batch_frozen, centers, batch_labels),
                reg=phase.reg,
                scale=scale,
                temperature=recipe.temperature,
            )
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(phase, global_step - first_epoch * steps_per_epoch, phase_steps)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; weighting each share by its size makes that the batch mean
            (loss * (len(index) * world.size / len(batch))).backward()
            optimizer.step()
            summed = distributed.total(float(loss.detach()) * len(index), world)  # every rank stops alike
            if not math.isfinite(summed):
                _diverged(modality, phase, epoch, step, summed / len(batch), checkpoint)
            epoch_loss += summed
        broken = non_finite_tensor(dict(calibration.named_parameters()))
        if broken is not None:  # checked before the checkpoint: a saved checkpoint is always a good one
            _diverged(modality, phase, epoch, steps_per_epoch - 1, float("nan"), checkpoint, tensor=broken)
        losses.append(epoch_loss / len(x))
        logger.info(
            "%s %s%s epoch %d/%d: loss %.4f",
            modality.value, calibration.config.method, f" ({phase.name})" if recipe.phases else "",
            epoch + 1, recipe.total_epochs, losses[-1],
        )  # fmt: skip
        if checkpoint is not None and world.main:
            _save_checkpoint(checkpoint, calibration, optimizer, epoch + 1, recipe_record, losses, elapsed())


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
    distributed.barrier()  # every rank has looked before rank 0 creates it
    try:
        _calibrate_into(base, train, modalities, recipe, out, progress)
    finally:  # a run that failed before saving anything leaves no empty folders behind
        leftovers = (out / "checkpoints", out) if created else (out / "checkpoints",)
        for folder in leftovers if distributed.current().main else ():
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
        loaded = base.identity_for([Modality.parse(m) for m in done])
        if header["encoder"] != loaded or header["embed_dim"] != base.embed_dim:
            raise DataError(
                f"{out} holds a calibration of {header['encoder']!r}, not of the loaded {loaded!r}; "
                "fix: choose another --out folder"
            )
    present = [Modality.parse(m) for m in done]
    for modality in modalities:
        data = train.data[modality]
        centers = benchmark_centers(base, train, modality)
        previous = done.get(modality.value)
        fingerprint = fingerprint_rows(data.inputs, data.labels)
        wanted = asdict(recipe.for_modality(modality)) | {
            "modality": modality.value,
            "n": len(data),
            "data": fingerprint,
        }
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
        if distributed.current().main:
            kept = [m for m in present if m is not modality]
            present = [*kept, modality]
            write_calibrations(
                out,
                encoder=base.identity_for(present),
                kept_encoder=base.identity_for(kept),
                embed_dim=base.embed_dim,
                encoder_parameters=base.num_parameters(),
                modules={modality.value: outcome.calibration},
            )
            checkpoint.unlink(missing_ok=True)
        distributed.barrier()  # the others read it once it is written
