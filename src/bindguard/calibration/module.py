"""One modality's calibration: an optional purifier, front-end floor, in-encoder override (LoRA or full) and head.

A method is one part or several joined with "+", applied in data-flow order:
``purifier`` (raw input) -> ``floor`` (a log-power front end's floor, where the encoder has one) ->
``lora`` or ``finetune`` (weights inside the frozen encoder) -> ``head`` or ``residual-head`` (embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bindguard._checks import check_count, check_number
from bindguard._types import Modality
from bindguard.calibration.floor import LearnedFloor
from bindguard.calibration.heads import LinearHead, ResidualHead
from bindguard.calibration.lowrank import FullOverride, LowRankAdapter
from bindguard.calibration.purifiers import Purifier
from bindguard.errors import ConfigError, UnknownNameError

PARTS = ("purifier", "floor", "lora", "finetune", "head", "residual-head")
FORMAT = "bindguard-calibration/1"
DEFAULT_OPTIONS = {
    "rank": 4,
    "hidden": 256,
    "width": 16,
    "noise": 0.0,
    "small": True,
    "spectral": False,
    "neighbours": 0,
    "gate": 0.0,
    "floor": 10.0,  # the best start measured on TinyBind audio (benchmarks/README.md, the floor screens)
}
SMALL_TENSOR = 20_000  # LoRA also updates tensors up to this size in full: biases, depthwise kernels


def parse_method(method: str) -> tuple[str, ...]:
    """``"purifier+lora"`` -> ("purifier", "lora"), checked and in data-flow order."""
    parts = [part.strip().lower() for part in method.split("+") if part.strip()]
    if not parts:
        raise ConfigError("--method is empty; choose from: " + ", ".join(PARTS) + " (joined with + to combine)")
    for part in parts:
        if part not in PARTS:
            import difflib

            close = difflib.get_close_matches(part, PARTS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(f"unknown calibration method {part!r}; {hint}allowed: {', '.join(PARTS)}")
    if "lora" in parts and "finetune" in parts or "head" in parts and "residual-head" in parts:
        raise ConfigError(f"--method {method!r} combines two parts of the same kind; keep one")
    return tuple(part for part in PARTS if part in parts)


def check_options(options: object) -> dict:
    """Method sizes (``DEFAULT_OPTIONS``' keys): positive integer sizes, a finite noise >= 0, a boolean ``small``."""
    if not isinstance(options, dict):
        raise ConfigError(f"calibration options must be an object such as {{'rank': 4}}, got {type(options).__name__}")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown calibration option {unknown[0]!r}; allowed: {', '.join(DEFAULT_OPTIONS)}")
    for name in ("rank", "hidden", "width"):
        if name in options:
            check_count(name, options[name], 1)
    if "neighbours" in options:
        check_count("neighbours", options["neighbours"], 0)
    if "noise" in options:
        check_number("noise", options["noise"], least=0.0)
    if "floor" in options:
        check_number("floor", options["floor"], least=0.0, inclusive=False)
    if "gate" in options:
        check_number("gate", options["gate"], least=0.0)
        if options["gate"] and not options.get("spectral"):
            raise ConfigError("calibration option 'gate' sets the spectral gate's start; it needs 'spectral': true")
    for name in ("small", "spectral"):
        if name in options and not isinstance(options[name], bool):
            raise ConfigError(f"calibration option {name!r} must be true or false, got {options[name]!r}")
    return options


def check_threat(threat: object) -> dict:
    """``{"norm": "linf" | "l2", "eps": finite > 0}``, the budget a calibration was trained at."""
    if not isinstance(threat, dict) or threat.get("norm") not in ("linf", "l2"):
        raise ConfigError(f"a calibration's threat must be {{'norm': 'linf' or 'l2', 'eps': number}}, got {threat!r}")
    check_number("eps", threat.get("eps"), least=0.0, inclusive=False)
    return threat


@dataclass(frozen=True)
class CalibrationConfig:
    """What ``config.json`` records about one modality's calibration; every field is checked on construction."""

    modality: str
    method: str
    objective: str
    threat: dict
    options: dict = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    recipe: dict = field(default_factory=dict)
    trainable_parameters: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str):
            raise ConfigError(f"a calibration's modality must be a name, got {self.modality!r}")
        Modality.parse(self.modality)
        if not isinstance(self.method, str):
            raise ConfigError(f"a calibration's method must be text such as 'purifier+lora', got {self.method!r}")
        parse_method(self.method)
        if not isinstance(self.objective, str) or not self.objective:
            raise ConfigError(f"a calibration's objective must be a name such as 'ce', got {self.objective!r}")
        check_threat(self.threat)
        check_options(self.options)
        if not isinstance(self.recipe, dict):
            raise ConfigError(f"a calibration's recipe must be an object, got {type(self.recipe).__name__}")
        check_count("trainable_parameters", self.trainable_parameters, 0)

    def to_json(self) -> dict:
        return asdict(self)


class Calibration(nn.Module):
    """The trainable modules of one modality.

    Args:
        config: method and sizes.
        shape, domain: the modality's per-sample input shape and (low, high) range (for the purifier).
        purifier_kind: the denoiser the modality's spec declares (``InputSpec.purifier``), or None
            when none fits (then the ``purifier`` part is refused).
        project: the spec's projection back into the domain (``InputSpec.project``), applied after
            the purifier; default: clamp into ``domain``.
        log_floor: ``(buffer name, bands)`` of the front end's floor (``Encoder.log_floor``), or None
            when the modality has none (then the ``floor`` part is refused).
        embed_dim: the shared embedding size (for the head).
        tower: ``{name: tensor}`` of the frozen encoder's parameters this modality uses (for LoRA
            and fine-tuning); LoRA adapts the 2-D and 1x1-convolution weights among them.
    """

    def __init__(
        self,
        config: CalibrationConfig,
        *,
        shape: tuple[int, ...],
        domain: tuple[float, float],
        embed_dim: int,
        tower: dict[str, torch.Tensor],
        purifier_kind: str | None = None,
        project: Callable[[torch.Tensor], torch.Tensor] | None = None,
        log_floor: tuple[str, int] | None = None,
    ):
        super().__init__()
        self.config = config
        parts = parse_method(config.method)
        options = DEFAULT_OPTIONS | dict(config.options)
        self.purifier: Purifier | None = None
        if "purifier" in parts:
            if purifier_kind is None:
                raise ConfigError(
                    f"no purifier fits the {config.modality} input (its spec declares none); "
                    "fix: use --method head or lora"
                )
            self.purifier = Purifier(
                purifier_kind,
                shape,
                domain,
                project=project,
                width=int(options["width"]),
                noise=float(options["noise"]),
                spectral=bool(options["spectral"]),
                neighbours=int(options["neighbours"]),
                # in multiples of the calibration's budget in the input's units (eps x range)
                gate=float(options["gate"]) * float(config.threat["eps"]) * (domain[1] - domain[0]),
            )
        self.floor: LearnedFloor | None = None
        if "floor" in parts:
            if log_floor is None:
                raise ConfigError(
                    f"the {config.modality} front end takes no logarithm of a power with a floor; "
                    "fix: drop 'floor' from --method"
                )
            self.floor = LearnedFloor(log_floor[0], log_floor[1], float(options["floor"]))
        self.override: nn.Module | None = None
        if "lora" in parts:
            targets = {name: tuple(t.shape) for name, t in tower.items() if adaptable(name, t)}
            if not targets:
                raise ConfigError(f"the {config.modality} tower has no linear or 1x1 convolution weights for LoRA")
            small = {
                name: tuple(t.shape)
                for name, t in tower.items()
                if name not in targets and t.is_floating_point() and t.numel() <= SMALL_TENSOR
            }
            self.override = LowRankAdapter(
                targets, rank=int(options["rank"]), small=small if options["small"] else None
            )
        elif "finetune" in parts:
            self.override = FullOverride({name: t for name, t in tower.items() if t.is_floating_point()})
        self.head: nn.Module | None = None
        if "head" in parts:
            self.head = LinearHead(embed_dim)
        elif "residual-head" in parts:
            self.head = ResidualHead(embed_dim, hidden=int(options["hidden"]))

    @property
    def randomized(self) -> bool:
        return self.purifier is not None and self.purifier.randomized

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def adaptable(name: str, tensor: torch.Tensor) -> bool:
    """Weights LoRA adapts: linear (out, in) and pointwise convolutions (out, in, 1[, 1])."""
    return name.endswith("weight") and tensor.dim() >= 2 and all(size == 1 for size in tensor.shape[2:])
