"""Train TinyBind's own parts: one projection head per trunk modality and the PointNet.

The text tower and the vision trunk stay frozen. Each head is trained with two losses, as the
Bind models are: cross-entropy of scaled cosine similarities to the frozen text semantic centers
(language is the binding center), and a symmetric InfoNCE that binds each glyph-derived modality
to the image of the same instance (as ImageBind binds modalities through paired data), which is
what makes instance-level cross-modal retrieval meaningful.

    L = sum_m CE(s * <z_m, c_k>, y) + w * sum_{m != image} InfoNCE(z_image, z_m; tau)

The event head is bound afterwards, in a stage of its own (``bind_event_tower``): the other heads
frozen, its events bound to the frozen image embeddings of the same instances and to the text
centers, with its own random stream. So the other parts come out exactly as they did before
events existed, and an event head can be bound to trained parts that have none.

Trunk features are computed once per rendering variant and cached in memory, so training costs
minutes on two CPU cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bindguard._checks import check_count, check_number, check_seed
from bindguard._types import Modality
from bindguard.data.builtin.benchmark import MODALITIES, load_builtin
from bindguard.encoders.centers import compute_semantic_centers
from bindguard.encoders.tinybind import TRUNK_MODALITIES, TinyBind, projection_head, shipped_weights_path
from bindguard.errors import ConfigError

logger = logging.getLogger(__name__)
# Trained together in the first stage; the event head is bound to them afterwards.
FIRST_STAGE = tuple(m for m in MODALITIES if m is not Modality.EVENT)
GLYPH_MODALITIES = tuple(m for m in FIRST_STAGE if m is not Modality.AUDIO)
FIRST_TRUNK = tuple(m for m in TRUNK_MODALITIES if m is not Modality.EVENT)
EVENT_SEED_OFFSET = 1  # the event stage's random stream: recipe.seed + this

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
    event_variants: int = 8  # the event stage's renderings: events vary more (motion, noise) than one pose
    limit: int | None = None  # train on the first samples only (quick checks, tests)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        for name in ("variants", "epochs", "event_variants"):
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
    centers = {m: compute_semantic_centers(model, benchmark.class_names, benchmark.templates[m]) for m in FIRST_STAGE}
    mean, std = _audio_statistics(model, benchmark.data[Modality.AUDIO].inputs)
    model.audio_mean.copy_(mean)
    model.audio_std.copy_(std)

    features: list[dict[Modality, torch.Tensor]] = []
    points: list[torch.Tensor] = []
    for variant in range(recipe.variants):
        report("features", variant, recipe.variants)
        rendered = benchmark if variant == 0 else load_builtin(split="train", variant=variant, limit=recipe.limit)
        features.append({m: _trunk_features(model, m, rendered.data[m].inputs) for m in FIRST_TRUNK})
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
    model.eval()
    bind_event_tower(model, recipe, progress=progress)
    model.recipe = asdict(recipe) | {"train_seconds": round(time.perf_counter() - started, 1)}
    return model


def bind_event_tower(model: TinyBind, recipe: TrainRecipe | None = None, *, progress: Progress | None = None) -> dict:
    """Train TinyBind's event head against its frozen image head and the text centers; deterministic.

    The head is initialised afresh from ``recipe.seed + EVENT_SEED_OFFSET``; the loss is the first
    stage's, for events alone: CE to the event centers plus ``pair_weight`` x InfoNCE to the frozen
    image embeddings of the same instances (same glyph, pose and motion).

    Returns:
        What was done, for the weights' metadata (the recipe and the seconds it took).
    """
    recipe = recipe or TrainRecipe()
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    seed = recipe.seed + EVENT_SEED_OFFSET
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = projection_head(model.config).to(model.audio_mean.device)
    model.heads[Modality.EVENT.value] = head
    pair = (Modality.IMAGE, Modality.EVENT)
    benchmark = load_builtin(split="train", modalities=pair, variant=0, limit=recipe.limit)
    centers = compute_semantic_centers(model, benchmark.class_names, benchmark.templates[Modality.EVENT])
    images: list[torch.Tensor] = []
    events: list[torch.Tensor] = []
    for variant in range(recipe.event_variants):
        report("event features", variant, recipe.event_variants)
        rendered = (
            benchmark
            if variant == 0
            else load_builtin(split="train", modalities=pair, variant=variant, limit=recipe.limit)
        )
        with torch.no_grad():
            image = model.heads[Modality.IMAGE.value](
                _trunk_features(model, Modality.IMAGE, rendered.data[Modality.IMAGE].inputs)
            )
        images.append(F.normalize(image, dim=-1))
        events.append(_trunk_features(model, Modality.EVENT, rendered.data[Modality.EVENT].inputs))
    labels = benchmark.data[Modality.EVENT].labels
    head.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = (len(labels) + recipe.batch_size - 1) // recipe.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for epoch in range(recipe.epochs):
        report("event train", epoch, recipe.epochs)
        order = torch.randperm(len(labels), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            variant = int(torch.randint(recipe.event_variants, (1,), generator=generator))
            embedding = F.normalize(head(events[variant][batch]), dim=-1)
            loss = F.cross_entropy(recipe.logit_scale * embedding @ centers.T, labels[batch])
            loss = loss + recipe.pair_weight * _info_nce(images[variant][batch], embedding, recipe.pair_temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        logger.info("event epoch %d loss %.4f", epoch, loss.item())
    report("event train", recipe.epochs, recipe.epochs)
    head.requires_grad_(False)
    head.eval()
    model.__dict__["_event_bound"] = True
    return asdict(recipe) | {
        "stage": "event",
        "stage_seed": seed,
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def bind_event_file(
    weights: Path | None, out: Path, recipe: TrainRecipe | None = None, *, progress: Progress | None = None
) -> dict:
    """Bind an event head to trained parts that hold none (``weights``; None: the shipped ones), written to ``out``.

    The trunk is the unfused one ``train_tinybind`` trains on, so the head equals the one a bind in
    training would give on parts with these values. Returns the recipe written with it.
    """
    model = TinyBind().eval()
    model.requires_grad_(False)
    model.load_trained(Path(weights) if weights is not None else shipped_weights_path())
    if model.event_bound:
        raise ConfigError(f"TinyBind weights {weights} already hold an event head; there is nothing to bind")
    done = bind_event_tower(model, recipe, progress=progress)
    model.save_event_tower(out, recipe=done)
    return done
