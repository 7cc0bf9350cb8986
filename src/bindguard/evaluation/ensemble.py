"""Named attack ensembles with fixed hyperparameters; the per-sample worst case over their members is reported."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from bindguard.attacks import Attack, ThreatModel, create_attack, list_attacks
from bindguard.errors import ConfigError, UnknownNameError

STANDARD = "standard"


@dataclass(frozen=True)
class Member:
    """One attack of an ensemble: a registered name and its fixed options (``steps`` comes from the run)."""

    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    uses_steps: bool = True

    def build(self, threat: ThreatModel, *, steps: int, seed: int, square_queries: int | None = None) -> Attack:
        options = dict(self.options)
        if self.uses_steps:
            options.setdefault("steps", steps)
        if self.attack == "square" and square_queries:  # a Square member runs with the run's query budget
            options.setdefault("queries", square_queries)
        return create_attack(self.attack, threat=threat, seed=seed, **options)


@dataclass(frozen=True)
class Ensemble:
    name: str
    members: tuple[Member, ...]

    @property
    def attack_names(self) -> list[str]:
        return [member.attack for member in self.members]


# The standard ensemble, after AutoAttack's: APGD on CE, targeted APGD on DLR (three runner-up
# classes), the ranking attack that also takes top-5 down, and the label-free embedding attack.
# Square runs separately, as a gradient-masking check whose breaks also count in the worst case.
STANDARD_ENSEMBLE = Ensemble(
    STANDARD,
    (
        Member("apgd-ce"),
        Member("apgd-t", {"targets": 3}),
        Member("rank"),
        Member("embed"),
    ),
)

# Attacks that need a context the zero-shot evaluation cannot give (a target embedding).
_NOT_FOR_ZERO_SHOT = {"cross-modal"}


def parse_ensemble(text: str) -> Ensemble:
    """``"standard"`` or a comma-separated list of registered attack names, in any case.

    Repeats are dropped, keeping the first; ``standard`` inside a list stands for its members.

    Raises:
        UnknownNameError: for an unknown attack name.
        ConfigError: for an empty list, a non-string, or an attack that zero-shot evaluation cannot run.
    """
    known = f"use 'standard' or names from: {', '.join(list_attacks())} (bindguard attacks list)"
    if not isinstance(text, str):
        raise ConfigError(f"attacks must be a comma-separated string, got {text!r}; {known}")
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"no attack given in {text!r}; {known}")
    if names == [STANDARD]:
        return STANDARD_ENSEMBLE
    members = []
    for name in names:
        if name == STANDARD:
            members.extend(STANDARD_ENSEMBLE.members)
            continue
        if name not in list_attacks():
            close = difflib.get_close_matches(name, [STANDARD, *list_attacks()], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(
                f"unknown attack {name!r}; {hint}known: standard, {', '.join(list_attacks())} (bindguard attacks list)"
            )
        if name in _NOT_FOR_ZERO_SHOT:
            raise ConfigError(
                f"attack {name!r} needs target embeddings; run it with 'bindguard attack', not in an eval ensemble"
            )
        members.append(Member(name, uses_steps=name not in ("fgsm", "square")))
    unique: dict[str, Member] = {}
    for member in members:
        unique.setdefault(member.attack, member)  # keep the first options, drop repeats
    return Ensemble(",".join(dict.fromkeys(names)), tuple(unique.values()))
