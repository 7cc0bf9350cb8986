"""`tinybind train` is reproducible from its seed and actually learns."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.data.builtin.benchmark import Benchmark, load_builtin
from bindguard.encoders.centers import compute_semantic_centers
from bindguard.encoders.tinybind import TinyBind
from bindguard.training.tinybind import TrainRecipe, train_tinybind

# Six short epochs cost about what two do (rendering and trunk features dominate) and leave a clear drop.
RECIPE = TrainRecipe(seed=3, variants=1, epochs=6, limit=48, batch_size=16)
MEASURED = (Modality.IMAGE, Modality.POINT)  # a trunk head and the PointNet


def _zero_shot_loss(model: TinyBind, benchmark: Benchmark, centers: dict[Modality, torch.Tensor]) -> float:
    """The training loss's cross-entropy to the text centers, summed over ``MEASURED`` on the training samples."""
    total = 0.0
    for modality in MEASURED:
        data = benchmark.data[modality]
        with torch.no_grad():
            embeddings = model.encode_modality(modality, data.inputs)  # (N, D)
        total += float(F.cross_entropy(RECIPE.logit_scale * embeddings @ centers[modality].T, data.labels))
    return total


def test_training_is_deterministic_and_reduces_loss() -> None:
    trained = train_tinybind(RECIPE)
    again = train_tinybind(RECIPE).trained_state()
    for key, value in trained.trained_state().items():
        assert torch.equal(value, again[key]), key
    other = train_tinybind(replace(RECIPE, seed=4)).trained_state()
    assert not torch.equal(trained.trained_state()["heads.image.0.weight"], other["heads.image.0.weight"])

    torch.manual_seed(RECIPE.seed)  # the very initialisation train_tinybind starts from
    untrained = TinyBind().eval()
    benchmark = load_builtin(split="train", limit=RECIPE.limit, modalities=list(MEASURED))
    centers = {  # the text tower is frozen: one set of centers serves both models
        modality: compute_semantic_centers(trained, benchmark.class_names, benchmark.templates[modality])
        for modality in MEASURED
    }
    before, after = _zero_shot_loss(untrained, benchmark, centers), _zero_shot_loss(trained, benchmark, centers)
    assert after < 0.75 * before, f"zero-shot loss on the training samples: {before:.3f} before, {after:.3f} after"
