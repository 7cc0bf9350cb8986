"""Caption retrieval: text<->media Recall@1/5/10 with each sample's own captions, clean and with the media attacked.

Clean, both ways over the whole split: each caption queries the media (relevant: the sample it
describes), and each sample queries all captions (relevant: any of its own).

Under attack, per sample and worst case over the run's ensemble, as for zero-shot:

- media -> text, the query attacked: the sample's captions are its "class" (a (N, K, D) center
  set scored by the nearest caption), which the zero-shot ensemble attacks end to end; a sample
  counts as retrieved within K while one of its own captions ranks among the K best of all captions.
- text -> media, the gallery item attacked: each sample is perturbed once for all its captions
  (a gallery holds an item once), to push it below the other, clean items in those captions'
  rankings (``GalleryHide`` at depth 1 and at depth 10, the label-free embedding attack, and
  Square on the same loss); Recall@K counts the captions that still find it within K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.attacks import Attack, ThreatModel
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.evaluation.clean import RECALL_KS, embed_all
from bindguard.evaluation.ensemble import Member
from bindguard.evaluation.metrics import recall_at_k, wilson_interval
from bindguard.evaluation.robust import (
    RobustSettings,
    Verdict,
    WorstCase,
    attack_stages,
    centers_fingerprint,
    evaluate_modality_threat,
    how_attacked,
    rank_suffix,
)
from bindguard.evaluation.state import RunState
from bindguard.objectives import GalleryHide, ObjectiveContext
from bindguard.objectives.gallery import retrieved_within

DEPTH = max(RECALL_KS)  # thresholds are kept down to the deepest reported rank
# the gallery-side counterpart of each zero-shot attack: what it does, aimed at hiding the item
_GALLERY_ATTACK = {
    "apgd-ce": ("hide", "apgd-ce", 1),
    "apgd-dlr": ("hide", "apgd-ce", 1),
    "apgd-t": ("hide-rank", "apgd-ce", DEPTH),
    "rank": ("hide-rank", "apgd-ce", DEPTH),
    "pgd": ("pgd", "pgd", 1),
    "fgsm": ("fgsm", "fgsm", 1),
    "square": ("square", "square", 1),
    "embed": ("embed", "embed", None),
}


@torch.no_grad()
def caption_embeddings(
    encoder: Encoder, captions: Sequence[Sequence[str]], batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, D) unit embeddings of every caption, and (M,) the sample each describes."""
    flat = [text for item in captions for text in item]
    owners = torch.tensor([index for index, item in enumerate(captions) for _ in item])
    chunks = [
        F.normalize(encoder.encode_modality(Modality.TEXT, flat[start : start + batch_size]).float(), dim=-1).cpu()
        for start in range(0, len(flat), batch_size)
    ]
    return torch.cat(chunks), owners


def caption_centers(embeddings: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """(N, K, D): each sample's captions, repeated in turn up to the largest count (a repeat never changes a nearest)."""
    groups = [embeddings[owners == index] for index in range(int(owners.max()) + 1)]
    most = max(len(group) for group in groups)
    return torch.stack([group[torch.arange(most) % len(group)] for group in groups])


def _row(modality: Modality, query: str, gallery: str, n: int, recalls: dict[int, float]) -> dict:
    return {
        "modality": modality.value,
        "task": "caption-retrieval",
        "query": query,
        "gallery": gallery,
        "level": "caption",
        **{f"recall@{k}": value for k, value in recalls.items()},
        "n": n,
        "attack": "none",
        "eps": 0.0,
    }


def caption_rows(
    encoder: Encoder, benchmark: Benchmark, modalities: Sequence[Modality], *, batch_size: int
) -> list[dict]:
    """Clean caption retrieval both ways, for each modality whose samples have captions."""
    rows = []
    for modality in modalities:
        data = benchmark.data[modality]
        if data.captions is None:
            continue
        media = embed_all(encoder, modality, data.inputs, batch_size=batch_size, shard=True)
        texts, owners = caption_embeddings(encoder, data.captions)
        samples = torch.arange(len(media))
        to_media = recall_at_k(texts @ media.T, owners[:, None] == samples[None, :], RECALL_KS)
        to_text = recall_at_k(media @ texts.T, samples[:, None] == owners[None, :], RECALL_KS)
        rows.append(_row(modality, "text", modality.value, len(owners), to_media))
        rows.append(_row(modality, modality.value, "text", len(media), to_text))
    return rows


def caption_verdict(texts: torch.Tensor, owners: torch.Tensor) -> Verdict:
    """Media -> text hits at each K: one of the sample's captions is among the K best of all captions."""

    def verdict(embedding: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores = embedding.float() @ texts.T
        own = owners[None, :] == samples[:, None]
        best_own = scores.masked_fill(~own, -torch.inf).amax(1)
        others = scores.masked_fill(own, -torch.inf).topk(min(DEPTH, scores.shape[1]), dim=1).values
        return tuple(best_own > others[:, k - 1] if k <= others.shape[1] else best_own > -torch.inf for k in RECALL_KS)

    return verdict


def gallery_context(texts: torch.Tensor, owners: torch.Tensor, media: torch.Tensor) -> ObjectiveContext:
    """Each sample's captions as (N, Q, D) queries and their (N, Q, DEPTH) thresholds over the clean gallery.

    A caption's threshold at rank r is the r-th best score among the other samples (-2, below any
    cosine, where there are fewer than r others); padding queries are zero with threshold 2.
    """
    scores = texts @ media.T  # (M, N)
    others = scores.masked_fill(owners[:, None] == torch.arange(len(media))[None, :], -torch.inf)
    ranked = others.topk(min(DEPTH, len(media)), dim=1).values
    ranked = F.pad(ranked, (0, DEPTH - ranked.shape[1]), value=-2.0).clamp(min=-2.0)
    most = int(torch.bincount(owners, minlength=len(media)).max())
    queries = torch.zeros(len(media), most, texts.shape[1])
    thresholds = torch.full((len(media), most, DEPTH), 2.0)
    for sample in range(len(media)):
        mine = torch.nonzero(owners == sample).flatten()
        queries[sample, : len(mine)], thresholds[sample, : len(mine)] = texts[mine], ranked[mine]
    return ObjectiveContext(queries=queries, thresholds=thresholds)


def gallery_verdict(context: ObjectiveContext) -> Verdict:
    """Text -> media hits at each K: how many of the sample's captions still find it within the top K."""

    def verdict(embedding: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mine = context.subset(samples)
        return tuple(retrieved_within(embedding.float(), mine, k).sum(1).float() for k in RECALL_KS)

    return verdict


def gallery_stages(settings: RobustSettings, threat: ThreatModel) -> list[tuple[str, Callable[[], Attack], bool]]:
    """The run's ensemble turned on the gallery item: each attack aimed at hiding it, Square last as the check."""

    def build(attack: str, depth: int | None) -> Attack:
        options = {} if depth is None else {"objective": GalleryHide(top_k=depth)}
        member = Member(attack, options, uses_steps=attack not in ("fgsm", "square"))
        return member.build(threat, steps=settings.steps, seed=settings.seed, square_queries=settings.square_queries)

    chosen = {}
    for name in settings.ensemble.attack_names:
        if name in _GALLERY_ATTACK:
            stage, attack, depth = _GALLERY_ATTACK[name]
            chosen.setdefault(stage, (attack, depth))
    stages = [
        (stage, lambda a=attack, d=depth: build(a, d), stage == "square") for stage, (attack, depth) in chosen.items()
    ]
    if settings.square_queries and "square" not in chosen:
        stages.append(("square", lambda: build("square", 1), True))
    return stages


def caption_robust_rows(
    encoder: Encoder,
    benchmark: Benchmark,
    threats: Sequence[ThreatModel],
    *,
    modalities: Sequence[Modality],
    settings: RobustSettings,
    state_directory: Path | None = None,
    run_config: dict | None = None,
) -> list[dict]:
    """Recall@1/5/10 under each threat both ways (media -> text and text -> media), per-sample worst case."""
    rows = []
    for modality in modalities:
        data = benchmark.data[modality]
        if data.captions is None:
            continue
        texts, owners = caption_embeddings(encoder, data.captions)
        centers = caption_centers(texts, owners)
        media = embed_all(encoder, modality, data.inputs, batch_size=settings.batch_size, shard=True)
        samples = torch.arange(len(data))
        gallery = gallery_context(texts, owners, media)
        directions = {
            "text": (caption_verdict(texts, owners), None, None),  # query: the media; gallery: the captions
            modality.value: (gallery_verdict(gallery), gallery_stages, gallery),  # query: a caption; gallery: media
        }
        for threat in sorted(threats, key=lambda t: (t.norm, t.eps)):
            for gallery_side, (verdict, stages, context) in directions.items():
                config = (run_config or {}) | {
                    "task": "caption-retrieval",
                    "modality": modality.value,
                    "gallery": gallery_side,
                    "threat": str(threat),
                    "steps": settings.steps,
                    "ensemble": settings.ensemble.attack_names,
                    "square": settings.square_queries,
                    "seed": settings.seed,
                    "n": len(data),
                    "batch_size": settings.batch_size,
                    "captions": centers_fingerprint(centers),
                    **({} if settings.precision == "float32" else {"precision": settings.precision}),
                }
                side = "captions" if gallery_side == "text" else "gallery"
                name = f"{modality.value}-{side}-{threat.norm}-{threat.eps:.8f}{rank_suffix()}.json"
                state = RunState(None if state_directory is None else state_directory / name, config)
                worst, square = evaluate_modality_threat(
                    encoder, modality, data.inputs, samples, centers.to(encoder.device), threat, settings,
                    state=state, verdict=verdict, stages=None if stages is None else stages(settings, threat),
                    context=context,
                )  # fmt: skip
                clean = verdict(media, samples)
                rows.append(
                    _robust_row(
                        modality,
                        gallery_side,
                        threat,
                        encoder.input_spec(modality).range,
                        worst,
                        clean,
                        square,
                        settings,
                        stages=[name for name, _, _ in (stages or attack_stages)(settings, threat)],
                        queries=len(owners),
                    )  # fmt: skip
                )
    return rows


def _robust_row(
    modality: Modality,
    gallery: str,
    threat: ThreatModel,
    spec_range: float,
    worst: WorstCase,
    clean: tuple[torch.Tensor, ...],
    square: dict,
    settings: RobustSettings,
    *,
    stages: list[str],
    queries: int,
) -> dict:
    """One direction's row: Recall@K clean and worst case, over queries (captions or samples)."""
    n = len(worst.top1)
    text_queries = gallery != "text"
    count = queries if text_queries else n  # text -> media sums each sample's caption hits
    recall = {k: float(hit.float().sum()) / count for k, hit in zip(RECALL_KS, worst.hits, strict=True)}
    clean_recall = {k: float(hit.float().sum()) / count for k, hit in zip(RECALL_KS, clean, strict=True)}
    low, high = wilson_interval(recall[1] * count, count)
    row = {
        "modality": modality.value,
        "task": "caption-retrieval",
        "query": "text" if text_queries else modality.value,
        "gallery": gallery,
        "level": "caption",
        "attacked": "gallery" if text_queries else "query",
        **how_attacked(settings, threat, spec_range, stages),
        "n": count,
        "samples": n,
        **{f"clean_recall@{k}": value for k, value in clean_recall.items()},
        **{f"recall@{k}": value for k, value in recall.items()},
        "clean_top1": clean_recall[1],
        "clean_top5": clean_recall[5],
        "top1": recall[1],
        "top5": recall[5],
        "top1_ci95": [low, high],
        "max_norm": float(worst.max_norm.max()) if n else 0.0,
        "after": {name: value * n / count for name, value in worst.after.items()},
        "square": square,
        "flags": [],
        "notes": [
            "the sanity checks run on the zero-shot rows of the same samples",
            (
                "each sample is attacked once for all its captions, the other gallery items left clean; "
                "top1 and top5 here are Recall@1 and @5 over the captions"
                if text_queries
                else "top1 and top5 here are Recall@1 and @5: one of the sample's captions among the 1 or 5 best captions"
            ),
        ],
    }
    if square.get("broken", 0) > 0:
        row["flags"].append("black-box-beats-white-box")
    if worst.disagreements:
        row["flags"].append("bf16-disagrees")
    return row
