"""Attacks, one per file, over a pluggable objective and a ``ThreatModel``; created by name.

attack = create_attack("apgd-ce", threat=ThreatModel.linf("4/255"), steps=100)
result = attack.run(encoder, "audio", waveforms, ObjectiveContext(labels=y, centers=centers))
"""

from __future__ import annotations

import fnmatch
from typing import Any

from bindguard.attacks.base import Attack, AttackResult
from bindguard.attacks.threat import NORMS, ThreatModel, parse_eps
from bindguard.errors import ConfigError
from bindguard.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack", "bindguard attacks list")
_FACTORIES = "bindguard.attacks.factories"
for _name, _description in {
    "fgsm": "one signed-gradient step of size eps (zero-shot CE)",
    "pgd": "projected gradient descent, random start (zero-shot CE)",
    "apgd-ce": "Auto-PGD on zero-shot cross-entropy",
    "apgd-dlr": "Auto-PGD on the scale-invariant DLR loss",
    "apgd-t": "targeted Auto-PGD (DLR) towards the 3 runner-up classes (at most C - 1)",
    "embed": "label-free: push the embedding away from its clean value (Auto-PGD)",
    "rank": "push the truth below every other class so top-5 falls too (CrossMaxim-style, Auto-PGD)",
    "cross-modal": "targeted: move the input onto a target embedding from another modality (Auto-PGD)",
    "square": "black-box Square attack (score-based, no gradients) for gradient-masking checks",
}.items():
    ATTACKS.register(_name, f"{_FACTORIES}:{_name.replace('-', '_')}", description=_description)


def create_attack(name: str, /, *, threat: ThreatModel, **options: Any) -> Attack:
    """Build a registered attack, e.g. ``create_attack("pgd", threat=ThreatModel.linf("4/255"), steps=20)``."""
    factory = ATTACKS.get(name).load()
    try:
        return factory(threat, **options)
    except TypeError as error:
        raise ConfigError(f"attack {name!r} does not take these options ({error})") from None


def list_attacks(pattern: str = "*") -> list[str]:
    return [name for name in ATTACKS.names() if fnmatch.fnmatch(name, pattern)]


__all__ = ["ATTACKS", "NORMS", "Attack", "AttackResult", "ThreatModel", "create_attack", "list_attacks", "parse_eps"]
