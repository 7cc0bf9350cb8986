"""Registered attack builders: each pairs an attack algorithm with an objective and its defaults."""

from __future__ import annotations

from typing import Any

from bindguard.attacks.apgd import APGD, APGDTargeted
from bindguard.attacks.base import Attack
from bindguard.attacks.fgsm import FGSM
from bindguard.attacks.pgd import PGD
from bindguard.attacks.threat import ThreatModel
from bindguard.objectives import EmbeddingDistortion, RankingPush, TargetedEmbedding, ZeroShotDLR


def _named(attack: Any, name: str) -> Any:
    attack.name = name
    return attack


def fgsm(threat: ThreatModel, **options: Any) -> FGSM:
    return FGSM(threat, **options)


def pgd(threat: ThreatModel, **options: Any) -> PGD:
    return PGD(threat, **options)


def apgd_ce(threat: ThreatModel, **options: Any) -> APGD:
    return _named(APGD(threat, **options), "apgd-ce")


def apgd_dlr(threat: ThreatModel, **options: Any) -> APGD:
    return _named(APGD(threat, objective=ZeroShotDLR(), **options), "apgd-dlr")


def apgd_t(threat: ThreatModel, **options: Any) -> APGDTargeted:
    return APGDTargeted(threat, **options)


def embed(threat: ThreatModel, **options: Any) -> APGD:
    return _named(APGD(threat, objective=EmbeddingDistortion(), **options), "embed")


def rank(threat: ThreatModel, *, top_k: int = 5, **options: Any) -> APGD:
    return _named(APGD(threat, objective=RankingPush(top_k=top_k), **options), "rank")


def cross_modal(threat: ThreatModel, **options: Any) -> APGD:
    return _named(APGD(threat, objective=TargetedEmbedding(), **options), "cross-modal")


def square(threat: ThreatModel, **options: Any) -> Attack:
    from bindguard.attacks.square import Square

    return Square(threat, **options)
