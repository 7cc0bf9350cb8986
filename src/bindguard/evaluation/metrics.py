"""Ranking metrics: top-k accuracy, Recall@K, and Wilson confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bindguard._statistics import wilson


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest scores.

    Shape:
        scores: (N, C); labels: (N,).
    """
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (N, kmax)
    hits = ranked == labels[:, None]
    return {k: float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def recall_at_k(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@K as retrieval papers report it: the fraction of queries with a relevant item in their top K.

    Shape:
        similarity: (Q, G) query-gallery scores; relevant: (Q, G) booleans.
    """
    ranked = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices  # (Q, kmax)
    hits = relevant.gather(1, ranked)
    return {k: float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def wilson_interval(successes: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of ``successes`` out of ``total``."""
    return wilson(successes / total if total > 0 else 0.0, total, z)
