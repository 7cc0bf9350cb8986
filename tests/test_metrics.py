"""Ranking metrics against brute-force references."""

from __future__ import annotations

import pytest
import torch

from bindguard.evaluation.metrics import recall_at_k, top_k_accuracy, wilson_interval


def _brute_top_k(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    hits = 0
    for row, label in zip(scores.tolist(), labels.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda index: -row[index])
        hits += label in order[:k]
    return hits / len(labels)


def _brute_recall(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    found = 0
    for scores, marks in zip(similarity.tolist(), relevant.tolist(), strict=True):
        order = sorted(range(len(scores)), key=lambda index: -scores[index])
        found += any(marks[index] for index in order[:k])
    return found / len(similarity)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_matches_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(50, 10, generator=generator)
    labels = torch.randint(0, 10, (50,), generator=generator)
    result = top_k_accuracy(scores, labels, (1, 3, 5))
    for k in (1, 3, 5):
        assert result[k] == pytest.approx(_brute_top_k(scores, labels, k))


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_matches_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.randn(30, 40, generator=generator)
    relevant = torch.rand(30, 40, generator=generator) < 0.05
    result = recall_at_k(similarity, relevant, (1, 5, 10))
    for k in (1, 5, 10):
        assert result[k] == pytest.approx(_brute_recall(similarity, relevant, k))


def test_perfect_and_hopeless_rankings() -> None:
    identity = torch.eye(6)
    assert recall_at_k(identity, identity.bool(), (1,))[1] == 1.0
    assert recall_at_k(-identity, identity.bool(), (1, 5))[5] == 0.0


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(81, 100)
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_wilson_interval_of_counts_equals_the_reports_interval_of_the_proportion() -> None:
    from bindguard.reports.plots import wilson  # the torch-free path the reports draw with

    for successes, total in ((0, 10), (7, 10), (81, 100), (100, 100), (3, 0)):
        expected = wilson(successes / total if total else 0.0, total)
        assert wilson_interval(successes, total) == expected
    assert wilson_interval(3, 0) == (0.0, 1.0)
