"""Calibration recipes: what trains, on which examples, in which phases; shipped as data files.

A recipe is a ``CalibrationRecipe``: flat settings (method, objective, threat, schedule) that are
the defaults of every phase, an optional list of ``phases`` that each override some of them, and
optional per-modality overrides (``modalities``) of any field, phases included. A recipe without
phases is one phase of its flat settings.

Recipes ship as JSON files in ``training/recipes/`` (``bindguard calibrate --list-recipes``); a
user's own file has the same form and is passed by path (``--recipe my.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

from bindguard._checks import check_count, check_number, check_seed
from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.calibration import parse_method
from bindguard.calibration.module import check_options
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.objectives.calibration import check_objective

MODES = ("adaptive", "static")
# what one phase may set; the rest (method, norm, batch size, sizes, seed) holds for the whole recipe
PHASE_FIELDS = ("name", "objective", "mode", "eps", "attack_steps", "epochs", "learning_rate", "reg", "train")
RECIPE_FOLDER = "recipes"


@dataclass(frozen=True)
class Phase:
    """One stage of a recipe, every setting resolved.

    Attributes:
        name: shown in progress and logs.
        objective, mode, eps, attack_steps, epochs, learning_rate, reg: as in ``CalibrationRecipe``.
        train: the parts that train in this phase (the others stay as they are); all by default.
    """

    name: str
    objective: str
    mode: str
    norm: str
    eps: str
    attack_steps: int
    epochs: int
    learning_rate: float
    reg: float
    train: tuple[str, ...]

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel.parse(self.norm, self.eps)


@dataclass(frozen=True)
class CalibrationRecipe:
    """How to calibrate; recorded in the calibration's ``config.json``.

    Attributes:
        method: parts joined by "+" (``bindguard.calibration.PARTS``).
        objective: ``ce``, ``l2``, ``infonce``, ``stable``, ``distill`` or ``clean``
            (``objectives/calibration.py``).
        mode: ``adaptive`` (attack the current calibrated model) or ``static`` (the frozen one).
        norm, eps: the training threat model (eps relative to the domain's range).
        attack_steps: PGD steps per adversarial example; step size 2.5 eps / steps.
        epochs, batch_size, learning_rate, weight_decay: AdamW with a cosine decay in each phase.
        reg: weight of the modality-consistency regulariser.
        logit_scale: of the CE losses; None uses the encoder's own (``Encoder.logit_scale``).
        temperature: of the InfoNCE loss.
        options: method sizes (``rank``, ``hidden``, ``width``, ``noise``).
        seed: seeds the data order, the attacks and the initialisation.
        name: the recipe's name (a shipped file's stem, or "custom").
        phases: stages trained one after another, each a dict of ``PHASE_FIELDS`` overriding the
            flat settings; empty: one phase of the flat settings.
        modalities: ``{modality: {field: value}}`` overrides for one modality (any field but
            ``name``, ``seed`` and ``modalities``).
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
    name: str = "custom"
    phases: list = field(default_factory=list)
    modalities: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()  # a recipe that exists is a valid one

    def check(self) -> None:
        """Every field's type and range; non-finite numbers are refused (they would train NaN calibrations)."""
        for name in ("method", "objective", "mode", "norm", "eps", "name"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"--{name.replace('_', '-')} must be text, got {getattr(self, name)!r}")
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
        if not isinstance(self.phases, list) or not all(isinstance(phase, dict) for phase in self.phases):
            raise ConfigError(f"a recipe's phases must be a list of objects, got {self.phases!r}")
        if not isinstance(self.modalities, dict):
            raise ConfigError(f"a recipe's modalities must be an object, got {type(self.modalities).__name__}")
        for modality, overrides in self.modalities.items():
            Modality.parse(modality)
            if not isinstance(overrides, dict):
                raise ConfigError(f"recipe overrides for {modality} must be an object, got {overrides!r}")
            forbidden = sorted(set(overrides) & {"name", "seed", "modalities"})
            if forbidden:
                raise ConfigError(f"recipe overrides for {modality} may not set {forbidden[0]!r}")
            _known_fields(overrides, f"recipe overrides for {modality}")
        if not self.modalities:
            self.schedule()  # phases are checked once per-modality overrides are applied

    @property
    def threat(self) -> ThreatModel:
        """The budget a calibration is claimed at: the last phase's."""
        return self.schedule()[-1].threat

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in self.schedule())

    @property
    def objectives(self) -> str:
        """The phases' objectives in order, without repeats next to each other: ``distill>ce``."""
        names: list[str] = []
        for phase in self.schedule():
            if not names or names[-1] != phase.objective:
                names.append(phase.objective)
        return ">".join(names)

    def for_modality(self, modality: Modality) -> CalibrationRecipe:
        """This recipe with ``modality``'s overrides applied (and no per-modality table left)."""
        overrides = self.modalities.get(modality.value, {})
        return replace(self, **overrides, modalities={})

    def schedule(self) -> list[Phase]:
        """The phases, each with every setting resolved and checked."""
        methods = parse_method(self.method)
        flat = {
            "name": "train",
            "objective": self.objective,
            "mode": self.mode,
            "norm": self.norm,
            "eps": self.eps,
            "attack_steps": self.attack_steps,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "reg": self.reg,
            "train": list(methods),
        }
        phases = []
        for number, overrides in enumerate(self.phases or [{}], start=1):
            unknown = sorted(set(overrides) - set(PHASE_FIELDS))
            if unknown:
                raise ConfigError(
                    f"phase {number} of recipe {self.name!r} sets {unknown[0]!r}; a phase may set: "
                    + ", ".join(PHASE_FIELDS)
                )
            settings = flat | {"name": f"phase-{number}" if self.phases else "train"} | overrides
            train = settings["train"]
            if not isinstance(train, list) or not train or not set(train) <= set(methods):
                raise ConfigError(
                    f"phase {number} of recipe {self.name!r} trains {train!r}; it must be a non-empty list of "
                    f"this method's parts ({', '.join(methods)})"
                )
            phase = Phase(**(settings | {"train": tuple(train)}))
            if overrides:  # a flat recipe of the phase's settings checks every value on construction
                replace(self, **{k: v for k, v in asdict(phase).items() if k not in ("name", "train")}, phases=[])
            phases.append(phase)
        return phases

    def with_settings(self, **settings: object) -> CalibrationRecipe:
        """This recipe with some flat settings changed (command-line flags over a recipe file).

        A setting given here applies to every modality: it also replaces the recipe's per-modality
        overrides of that field (``phases=`` replaces image's own phases in ``calmars``).

        Raises:
            ConfigError: for a setting that every phase of the recipe sets, where changing the flat
                default would change nothing (copy and edit the recipe file instead).
        """
        _known_fields(settings, "calibration settings")
        for name in settings:
            if self.phases and name in PHASE_FIELDS and all(name in phase for phase in self.phases):
                raise ConfigError(
                    f"recipe {self.name!r} sets {name} in each of its phases, so --{name.replace('_', '-')} would "
                    "change nothing; fix: copy its file (bindguard calibrate --list-recipes shows where) and edit it"
                )
        modalities = settings.pop("modalities", self.modalities)
        modalities = {
            modality: {k: v for k, v in overrides.items() if k not in settings}
            for modality, overrides in modalities.items()
        }
        return replace(self, **settings, modalities={m: o for m, o in modalities.items() if o})

    def to_json(self) -> dict:
        return asdict(self)


def _known_fields(values: dict, what: str) -> None:
    known = {f.name for f in fields(CalibrationRecipe)}
    unknown = sorted(set(values) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{what}: unknown field {unknown[0]!r}; {hint}allowed: {', '.join(sorted(known))}")


def shipped_recipes() -> dict[str, Path]:
    """``{name: file}`` of the recipes that ship with bindguard."""
    folder = resources.files("bindguard.training") / RECIPE_FOLDER
    return {Path(item.name).stem: Path(str(item)) for item in folder.iterdir() if item.name.endswith(".json")}


def read_recipe_file(path: Path) -> CalibrationRecipe:
    """A recipe from a JSON file: ``CalibrationRecipe`` fields plus an optional ``description``.

    Raises:
        DataError: when the file cannot be read or is not a JSON object.
        ConfigError: for an unknown field or a value out of range, naming the file.
    """
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"recipe file {path} cannot be read as JSON ({error}); fix: pass a JSON recipe file") from None
    if not isinstance(values, dict):
        raise DataError(f"recipe file {path} must hold a JSON object of recipe fields, got {type(values).__name__}")
    values.pop("description", None)
    values.setdefault("name", Path(path).stem)
    try:
        _known_fields(values, f"recipe file {path}")
        return CalibrationRecipe(**values)
    except ConfigError as error:
        raise ConfigError(f"recipe file {path}: {error}") from None


def describe_recipe(path: Path) -> str:
    """The ``description`` line of a recipe file ('' when it has none)."""
    try:
        description = json.loads(Path(path).read_text(encoding="utf-8")).get("description", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return description if isinstance(description, str) else ""


def load_recipe(name_or_path: str | Path) -> CalibrationRecipe:
    """A shipped recipe by name (``standard``, ``calmars``, ...) or a user's recipe file by path.

    Raises:
        UnknownNameError: for a name that is neither a shipped recipe nor an existing file.
    """
    shipped = shipped_recipes()
    if str(name_or_path) in shipped:
        return read_recipe_file(shipped[str(name_or_path)])
    path = Path(name_or_path)
    if path.is_file():
        return read_recipe_file(path)
    import difflib

    close = difflib.get_close_matches(str(name_or_path), sorted(shipped), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownNameError(
        f"no recipe {str(name_or_path)!r}: not a shipped recipe nor a file; {hint}shipped: {', '.join(sorted(shipped))}"
    )
