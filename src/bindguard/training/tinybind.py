"""Train TinyBind's own parts: one projection head per trunk modality and the PointNet.

The text tower and the vision trunk stay frozen. Each head is trained with two losses, as the
Bind models are: cross-entropy of scaled cosine similarities to the frozen text semantic centers
(language is the binding center), and a symmetric InfoNCE that binds each glyph-derived modality
to the image of the same instance (as ImageBind binds modalities through paired data), which is
what makes instance-level cross-modal retrieval meaningful.

    L = sum_m CE(s * <z_m, c_k>, y) + w * sum_{m != image} InfoNCE(z_image, z_m; tau)

Trunk features are computed once per rendering variant and cached in memory, so training costs
minutes on two CPU cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bindguard._checks import check_count, check_number, check_seed
from bindguard._types import Modality
from bindguard.data.builtin.benchmark import MODALITIES, load_builtin
from bindguard.encoders.centers import compute_semantic_centers
from bindguard.encoders.tinybind import TRUNK_MODALITIES, TinyBind

logger = logging.getLogger(__name__)
GLYPH_MODALITIES = tuple(m for m in MODALITIES if m is not Modality.AUDIO)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainRecipe:
    """Hyperparameters of ``train_tinybind``; recorded in the weights file's metadata."""

    seed: int = 0
    variants: int = 4  # renderings of the training split (pose, colour, noise augmentations)
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    logit_scale: float = 30.0  # centers are close (cosine ~0.8), so the CE needs a sharp scale
    pair_weight: float = 0.5
    pair_temperature: float = 0.1
    limit: int | None = None  # train on the first samples only (quick checks, tests)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        for name in ("variants", "epochs"):
            check_count(name, getattr(self, name), 1)
        check_count("batch_size", self.batch_size, 2)
        check_count("limit", self.limit, 1, optional=True)
        check_number("weight_decay", self.weight_decay)
        check_number("pair_weight", self.pair_weight)
        for name in ("learning_rate", "logit_scale", "pair_temperature"):
            check_number(name, getattr(self, name), inclusive=False)


@torch.no_grad()
def _trunk_features(model: TinyBind, modality: Modality, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat(
        [model.trunk_features(modality, inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    )


@torch.no_grad()
def _audio_statistics(model: TinyBind, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spectrograms = torch.cat([model.log_mel(waveforms[i : i + 256]) for i in range(0, len(waveforms), 256)])
    return spectrograms.mean(), spectrograms.std()


def _info_nce(anchor: torch.Tensor, other: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = anchor @ other.T / temperature  # (B, B): positives on the diagonal
    targets = torch.arange(len(anchor))
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def train_tinybind(recipe: TrainRecipe | None = None, *, progress: Progress | None = None) -> TinyBind:
    """Train TinyBind's heads and PointNet from scratch; deterministic for a given recipe.

    Args:
        recipe: hyperparameters, including the seed.
        progress: optional ``callback(stage, done, total)``.

    Returns:
        The trained model, frozen and in eval mode.
    """
    recipe = recipe or TrainRecipe()
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    model = TinyBind().eval()
    model.requires_grad_(False)
    report = progress or (lambda stage, done, total: None)

    benchmark = load_builtin(split="train", variant=0, limit=recipe.limit)
    centers = {m: compute_semantic_centers(model, benchmark.class_names, benchmark.templates[m]) for m in MODALITIES}
    mean, std = _audio_statistics(model, benchmark.data[Modality.AUDIO].inputs)
    model.audio_mean.copy_(mean)
    model.audio_std.copy_(std)

    features: list[dict[Modality, torch.Tensor]] = []
    points: list[torch.Tensor] = []
    for variant in range(recipe.variants):
        report("features", variant, recipe.variants)
        rendered = benchmark if variant == 0 else load_builtin(split="train", variant=variant, limit=recipe.limit)
        features.append({m: _trunk_features(model, m, rendered.data[m].inputs) for m in TRUNK_MODALITIES})
        points.append(rendered.data[Modality.POINT].inputs)
    report("features", recipe.variants, recipe.variants)
    glyph_labels = benchmark.data[Modality.IMAGE].labels
    audio_labels = benchmark.data[Modality.AUDIO].labels

    parameters = [*model.heads.parameters(), *model.point_net.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = (len(glyph_labels) + recipe.batch_size - 1) // recipe.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    model.heads.train()
    model.point_net.train()
    for epoch in range(recipe.epochs):
        report("train", epoch, recipe.epochs)
        order = torch.randperm(len(glyph_labels), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            variant = int(torch.randint(recipe.variants, (1,), generator=generator))
            labels = glyph_labels[batch]
            embeddings = {
                m: F.normalize(model.heads[m.value](features[variant][m][batch]), dim=-1)
                for m in GLYPH_MODALITIES
                if m is not Modality.POINT
            }
            embeddings[Modality.POINT] = F.normalize(model.point_net(points[variant][batch]), dim=-1)
            loss = sum(
                F.cross_entropy(recipe.logit_scale * embeddings[m] @ centers[m].T, labels) for m in GLYPH_MODALITIES
            )
            loss = loss + recipe.pair_weight * sum(
                _info_nce(embeddings[Modality.IMAGE], embeddings[m], recipe.pair_temperature)
                for m in GLYPH_MODALITIES
                if m is not Modality.IMAGE
            )
            audio_batch = torch.randint(len(audio_labels), (recipe.batch_size,), generator=generator)
            audio = F.normalize(
                model.heads[Modality.AUDIO.value](features[variant][Modality.AUDIO][audio_batch]), dim=-1
            )
            loss = loss + F.cross_entropy(
                recipe.logit_scale * audio @ centers[Modality.AUDIO].T, audio_labels[audio_batch]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        logger.info("epoch %d loss %.4f", epoch, loss.item())
    report("train", recipe.epochs, recipe.epochs)
    model.requires_grad_(False)
    model.recipe = asdict(recipe) | {"train_seconds": round(time.perf_counter() - started, 1)}
    return model.eval()
