"""Caption retrieval: text<->media Recall@K with each sample's own captions, clean and with the media attacked.

Clean, both ways over the whole split: each caption queries the media (relevant: the sample it
describes), and each sample queries all captions (relevant: any of its own). Under attack, each
sample's captions become its "class": the sample's K caption embeddings are a (N, K, D) center
set scored by the nearest caption (as UniBind-style centers are), so media->text Recall@1 and @5
are exactly top-1 and top-5 accuracy against them, and the run's ensemble attacks them per
sample, worst case, end to end, as for zero-shot classification. Attacking a sample to push its
captions down the ranking is also what attacking that gallery item does to its captions' text
queries; the text->media direction under attack is not reported separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.evaluation.clean import RECALL_KS, embed_all
from bindguard.evaluation.metrics import recall_at_k
from bindguard.evaluation.robust import (
    RobustSettings,
    centers_fingerprint,
    evaluate_modality_threat,
    rank_suffix,
    robust_row,
    top_hits,
)
from bindguard.evaluation.state import RunState
from bindguard.objectives.base import center_scores


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
    """Media->text Recall@1/@5 under each threat, per-sample worst case over the ensemble."""
    rows = []
    for modality in modalities:
        data = benchmark.data[modality]
        if data.captions is None:
            continue
        centers = caption_centers(*caption_embeddings(encoder, data.captions)).to(encoder.device)
        labels = torch.arange(len(data))
        clean = center_scores(
            embed_all(encoder, modality, data.inputs, batch_size=settings.batch_size, shard=True), centers.cpu()
        )
        clean_top1, clean_top5 = (float(hit.float().mean()) for hit in top_hits(clean, labels))
        for threat in sorted(threats, key=lambda t: (t.norm, t.eps)):
            config = (run_config or {}) | {
                "task": "caption-retrieval",
                "modality": modality.value,
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
            name = f"{modality.value}-captions-{threat.norm}-{threat.eps:.8f}{rank_suffix()}.json"
            state = RunState(None if state_directory is None else state_directory / name, config)
            worst, square = evaluate_modality_threat(
                encoder, modality, data.inputs, labels, centers, threat, settings, state=state
            )
            row = robust_row(
                modality, threat, encoder.input_spec(modality).range, worst, clean_top1, clean_top5, settings, square,
                num_classes=len(data),
            )  # fmt: skip
            row |= {"task": "caption-retrieval", "query": modality.value, "gallery": "text", "level": "caption"}
            if square.get("broken", 0) > 0:
                row["flags"].append("black-box-beats-white-box")
            if worst.disagreements:
                row["flags"].append("bf16-disagrees")
            row["notes"] = [
                *row["notes"],
                "top5 and recall@5 here count the sample among the 5 nearest samples (each by its nearest caption), "
                "not among the 5 nearest captions",
                "the sanity checks run on the zero-shot rows of the same samples",
            ]
            rows.append(row)
    return rows
