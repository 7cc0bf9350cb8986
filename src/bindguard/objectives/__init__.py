"""Pure differentiable objectives shared by attacks and calibration.

An objective scores each sample's embedding (higher = more adversarial) against an
``ObjectiveContext`` and says which samples an attack has already beaten.
"""

from bindguard.objectives.base import Objective, ObjectiveContext
from bindguard.objectives.classifier import LogitCE
from bindguard.objectives.embedding import EmbeddingDistortion, TargetedEmbedding
from bindguard.objectives.gallery import GalleryHide
from bindguard.objectives.ranking import RankingPush
from bindguard.objectives.zero_shot import ZeroShotCE, ZeroShotDLR, ZeroShotTargetedDLR

__all__ = [
    "EmbeddingDistortion",
    "GalleryHide",
    "LogitCE",
    "Objective",
    "ObjectiveContext",
    "RankingPush",
    "TargetedEmbedding",
    "ZeroShotCE",
    "ZeroShotDLR",
    "ZeroShotTargetedDLR",
]
