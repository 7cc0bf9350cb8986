"""`tinybind train` is reproducible from its seed and actually learns."""

from __future__ import annotations

import torch

from bindguard.training.tinybind import TrainRecipe, train_tinybind


def test_training_is_deterministic_and_reduces_loss() -> None:
    recipe = TrainRecipe(seed=3, variants=1, epochs=2, limit=48, batch_size=16)
    first = train_tinybind(recipe).trained_state()
    second = train_tinybind(recipe).trained_state()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    other = train_tinybind(TrainRecipe(seed=4, variants=1, epochs=2, limit=48, batch_size=16)).trained_state()
    assert not torch.equal(first["heads.image.0.weight"], other["heads.image.0.weight"])
