"""A calibrated encoder: the frozen base encoder with per-modality calibration modules around it.

It is an ``Encoder`` like any other, so every attack and evaluation runs on it unchanged, end to
end through purifier, adapters and head (adaptive attacks). Text is never calibrated: the
semantic centers stay the base encoder's.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from bindguard._types import Modality
from bindguard.calibration import Calibration, CalibrationConfig, read_calibrations, write_calibrations
from bindguard.encoders.base import Encoder, fingerprint_tensors, non_finite_tensor, state_mismatch
from bindguard.errors import BindguardError, DataError
from bindguard.modalities import InputSpec
from bindguard.objectives.calibration import check_objective


class _Embedder(nn.Module):
    """Calls the base encoder's ``_embed`` as a module forward, so ``functional_call`` can swap weights."""

    def __init__(self, base: Encoder):
        super().__init__()
        self.base = base

    def forward(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        return self.base._embed(modality, x)


def tower_parameters(encoder: Encoder, modality: Modality) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` of the base encoder that one modality's embedding depends on.

    Found by autograd on a probe batch, so it works for any encoder: shared trunks count for every
    modality that goes through them.
    """
    spec = encoder.input_spec(modality)
    low, high = spec.domain
    probe = torch.full((2, *spec.shape), (low + high) / 2) + 0.01 * torch.randn(2, *spec.shape)
    probe = spec.project(probe.clamp(low, high)).to(next(encoder.parameters()).device)
    named = [(n, p) for n, p in encoder.named_parameters() if p.is_floating_point()]
    flags = [p.requires_grad for _, p in named]
    training = encoder.training
    try:
        encoder.eval()
        for _, parameter in named:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            output = encoder.encode_modality(modality, probe, normalize=False, validate=False)
            gradients = torch.autograd.grad(output.square().sum(), [p for _, p in named], allow_unused=True)
    finally:
        for (_, parameter), flag in zip(named, flags, strict=True):
            parameter.requires_grad_(flag)
        encoder.train(training)
    return {
        name: parameter for (name, parameter), gradient in zip(named, gradients, strict=True) if gradient is not None
    }


def build_calibration(encoder: Encoder, config: CalibrationConfig) -> Calibration:
    """Fresh (identity-initialised) calibration modules of ``config`` for one modality of ``encoder``."""
    modality = encoder.check_modality(config.modality)
    spec = encoder.input_spec(modality)
    tower = tower_parameters(encoder, modality)
    return Calibration(
        config,
        shape=spec.shape,
        domain=spec.domain,
        embed_dim=encoder.embed_dim,
        tower={name: t.detach() for name, t in tower.items()},
        purifier_kind=spec.purifier,
        project=spec.project,
        log_floor=encoder.log_floor(modality),
    ).to(next(encoder.parameters()).device)


class CalibratedEncoder(Encoder):
    """``base`` with ``{modality: Calibration}``; uncalibrated modalities pass through unchanged."""

    def __init__(self, base: Encoder, calibrations: dict[Modality, Calibration]):
        super().__init__()
        self.base = base
        self.name = base.name
        self.modalities = base.modalities
        self.embed_dim = base.embed_dim
        self.calibrations = nn.ModuleDict({Modality.parse(m).value: c for m, c in calibrations.items()})
        self._embedder = _Embedder(base)
        self._merged: dict[str, tuple[tuple, dict[str, torch.Tensor]]] = {}
        self.source: Path | None = None  # the folder it was loaded from, if any

    def input_spec(self, modality: Modality) -> InputSpec:
        return self.base.input_spec(modality)

    @property
    def identity(self) -> str:
        """The base's identity plus a fingerprint of the calibration tensors (recomputed: they train)."""
        return f"{self.base.identity}+calibration@{fingerprint_tensors(self.calibrations.state_dict())}"

    @property
    def text_identity(self) -> str:
        return self.base.text_identity  # text is never calibrated: same tower, same centers

    def logit_scale(self, modality: Modality | str) -> float:
        return self.base.logit_scale(modality)

    def num_parameters(self) -> int:
        return self.base.num_parameters() + sum(p.numel() for p in self.calibrations.parameters())

    @property
    def randomized(self) -> bool:
        return self.base.randomized or any(c.randomized for c in self.calibrations.values())

    def calibration_of(self, modality: Modality) -> Calibration | None:
        """The modality's calibration, or None (an ``nn.ModuleDict`` has no ``.get``)."""
        return self.calibrations[modality.value] if modality.value in self.calibrations else None  # noqa: SIM401

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        calibration = self.calibration_of(modality)
        if calibration is None:
            return self.base._embed(modality, x)
        if calibration.purifier is not None:
            x = calibration.purifier(x)
        if calibration.override is not None or calibration.floor is not None:
            replaced = {} if calibration.override is None else self._adapted(modality, calibration.override)
            if calibration.floor is not None:
                replaced = replaced | {f"base.{name}": value for name, value in calibration.floor.overrides().items()}
            embedding = functional_call(self._embedder, replaced, (modality, x))
        else:
            embedding = self.base._embed(modality, x)
        return calibration.head(embedding) if calibration.head is not None else embedding

    def _adapted(self, modality: Modality, override: nn.Module) -> dict[str, torch.Tensor]:
        """The adapted weights; merged once and reused while the adapter's parameters do not change.

        An attack calls the model hundreds of times with the same adapter: merging LoRA into ~100
        weights on every call cost about a third of a forward+backward.
        """
        parameters = list(override.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return _prefixed(override, dict(self._embedder.named_parameters()))  # training: keep the graph
        key = tuple((id(p), p._version) for p in parameters)
        cached = self._merged.get(modality.value)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, _prefixed(override, dict(self._embedder.named_parameters())))
            self._merged[modality.value] = cached
        return cached[1]

    def save_pretrained(self, directory: Path) -> Path:
        """Write the calibrations as ``config.json`` + ``model.safetensors`` (see ``from_pretrained``)."""
        return write_calibrations(
            directory,
            encoder=self.base.identity_for([Modality.parse(m) for m in self.calibrations]),
            embed_dim=self.embed_dim,
            encoder_parameters=self.base.num_parameters(),
            modules=dict(self.calibrations.items()),
        )

    @classmethod
    def from_pretrained(cls, base: Encoder, directory: Path) -> CalibratedEncoder:
        """Load a calibration folder onto ``base``, checking that it was made for this encoder.

        Raises:
            DataError: for a folder of another encoder, embedding size or modality set, and for
                missing, pickled, corrupt or tampered files.
        """
        header, configs, tensors = read_calibrations(directory)
        check_made_for(base, header["encoder"], directory, [Modality.parse(m) for m in configs])
        broken = non_finite_tensor(tensors)
        if broken is not None:
            raise DataError(
                f"calibration {directory}: tensor {broken!r} holds NaN or infinite values; fix: calibrate again "
                "(with a lower --learning-rate if training diverged)"
            )
        if header["embed_dim"] != base.embed_dim:
            raise DataError(
                f"calibration {directory} is for {header['embed_dim']}-d embeddings; {base.name} has {base.embed_dim}"
            )
        calibrations = {}
        for modality, config in configs.items():
            try:
                for objective in config.objective.split(">"):  # a recipe's phases in order, e.g. distill>ce
                    check_objective(objective)
            except BindguardError as error:
                raise DataError(
                    f"calibration {directory}: modalities.{modality}: {error}; fix: calibrate again"
                ) from None
            if Modality.parse(modality) not in base.modalities:
                raise DataError(f"calibration {directory} has a {modality!r} part, but {base.name} has no such tower")
            module = build_calibration(base, config)
            prefix = f"{modality}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            mismatch = state_mismatch(module.state_dict(), state)
            if mismatch:
                raise DataError(
                    f"calibration {directory} does not fit {base.name} {modality} ({mismatch}); "
                    "fix: calibrate again for this encoder"
                )
            module.load_state_dict(state)
            module.requires_grad_(False)
            calibrations[Modality.parse(modality)] = module.eval()
        calibrated = cls(base, calibrations)
        calibrated.source = Path(directory)
        return calibrated


def check_made_for(base: Encoder, recorded: str, directory: Path, modalities: Sequence[Modality] | None = None) -> None:
    """Refuse a calibration recorded for another encoder or other weights behind the same name.

    ``recorded`` is the identity written at save time (``name@fingerprint``); folders written before
    identities existed record the name alone, and are checked by name.

    Raises:
        DataError: naming both encoders and the fix.
    """
    name = recorded.partition("@")[0]
    if name != base.name:
        raise DataError(
            f"calibration {directory} was made for encoder {name!r}, not {base.name!r}; "
            f"fix: use --model {name} or calibrate {base.name}"
        )
    loaded = base.identity if modalities is None else base.identity_for(modalities)
    if "@" in recorded and recorded != loaded:
        raise DataError(
            f"calibration {directory} was made for {recorded}, other weights than the loaded {loaded}; "
            "fix: load the weights it was made for (--weights), or calibrate these"
        )


def _prefixed(override: nn.Module, originals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The override's replacement tensors, keyed as parameters of the ``_Embedder`` (``base.`` prefix)."""
    plain = {name[len("base.") :]: value for name, value in originals.items()}
    return {f"base.{name}": value for name, value in override.overrides(plain).items()}


SHIPPED = "shipped"


def shipped_calibration(base: Encoder) -> Path:
    """The calibration that ships with bindguard for ``base`` (``calibration="shipped"``).

    Raises:
        DataError: when none ships for this encoder.
    """
    folder = Path(str(resources.files("bindguard.encoders") / "weights" / f"{base.name}-calibration"))
    if not (folder / "config.json").is_file():
        raise DataError(
            f"no calibration ships for {base.name}; fix: train one with bindguard calibrate --model {base.name} "
            "--out CAL and pass --calibration CAL"
        )
    return folder


def calibrate_encoder(base: Encoder, directory: str | Path) -> CalibratedEncoder:
    """``create_encoder(name, calibration=DIR)``: the base encoder with a saved calibration applied.

    ``"shipped"`` names the calibration that ships in the package for ``base`` (TinyBind's, trained
    with ``bindguard calibrate --recipe shipped``); a folder of that name is ``./shipped``.
    """
    if str(directory) == SHIPPED:
        directory = shipped_calibration(base)
    return CalibratedEncoder.from_pretrained(base, Path(directory))
