"""Clean evaluation: zero-shot classification, text<->modality retrieval, instance-level cross-modal retrieval."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bindguard import distributed
from bindguard._types import Modality
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.encoders.centers import benchmark_centers
from bindguard.evaluation.metrics import recall_at_k, top_k_accuracy, wilson_interval
from bindguard.objectives.base import center_scores

Progress = Callable[[str, int, int], None]
RECALL_KS = (1, 5, 10)


@torch.no_grad()
def embed_all(
    encoder: Encoder,
    modality: Modality,
    inputs: torch.Tensor,
    *,
    batch_size: int = 128,
    progress: Progress | None = None,
    shard: bool = False,
) -> torch.Tensor:
    """(N, D) unit-norm embeddings of a whole modality, in batches.

    With ``shard`` (a collective call: every rank must make it), each rank of a launched run embeds
    its own batches and all ranks receive every embedding; one process embeds them all.
    """
    device = encoder.device
    world = distributed.current() if shard else distributed.World()
    mine = {}
    for number, positions in distributed.my_batches(len(inputs), batch_size, world):
        mine[number] = encoder.encode_modality(modality, inputs[positions].to(device)).cpu()
        if progress:
            progress(modality.value, positions.stop, len(inputs))
    return torch.cat(distributed.gather_batches(mine, world))


def _row(modality: Modality, task: str, n: int, **fields: object) -> dict:
    return {"modality": modality.value, "task": task, **fields, "n": n, "attack": "none", "eps": 0.0}


def zero_shot_row(modality: Modality, embeddings: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> dict:
    scores = center_scores(embeddings, centers)  # (N, C) cosine similarities
    accuracy = top_k_accuracy(scores, labels, (1, 5))
    low, high = wilson_interval(accuracy[1] * len(labels), len(labels))
    return _row(modality, "zero-shot", len(labels), top1=accuracy[1], top5=accuracy[5], top1_ci95=[low, high])


def text_retrieval_rows(
    modality: Modality, embeddings: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor
) -> list[dict]:
    """Class-level retrieval: each class prompt center queries the items (relevant: same class), and back."""
    classes = torch.arange(centers.shape[0])
    relevant = classes[:, None] == labels[None, :]  # (C, N)
    text_to_items = recall_at_k(center_scores(embeddings, centers).T, relevant, RECALL_KS)
    items_to_text = recall_at_k(center_scores(embeddings, centers), relevant.T, RECALL_KS)
    return [
        _row(
            modality,
            "retrieval",
            centers.shape[0],
            query="text",
            gallery=modality.value,
            **{f"recall@{k}": v for k, v in text_to_items.items()},
        ),
        _row(
            modality,
            "retrieval",
            len(labels),
            query=modality.value,
            gallery="text",
            **{f"recall@{k}": v for k, v in items_to_text.items()},
        ),
    ]


def instance_retrieval_row(
    query: Modality,
    gallery: Modality,
    query_embeddings: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
) -> dict:
    """Cross-modal instance retrieval: the relevant gallery item is the one from the same source sample."""
    relevant = query_ids[:, None] == gallery_ids[None, :]
    recalls = recall_at_k(query_embeddings @ gallery_embeddings.T, relevant, RECALL_KS)
    return _row(
        query,
        "retrieval",
        len(query_ids),
        query=query.value,
        gallery=gallery.value,
        level="instance",
        chance_recall1=1.0 / len(gallery_ids),
        **{f"recall@{k}": v for k, v in recalls.items()},
    )


def evaluate_clean(
    encoder: Encoder,
    benchmark: Benchmark,
    *,
    modalities: Sequence[Modality] | None = None,
    batch_size: int = 128,
    progress: Progress | None = None,
) -> list[dict]:
    """Clean zero-shot and retrieval metrics for each modality, as result rows.

    Args:
        encoder: the model under test.
        benchmark: labelled data with class names and templates.
        modalities: subset to evaluate (default: all of the benchmark's that the encoder has).
        batch_size: samples per forward pass.
        progress: optional ``callback(stage, done, total)``.

    Returns:
        Rows with ``modality``, ``task``, metrics, ``n``, ``attack`` ("none") and ``eps`` (0).
    """
    modalities = list(modalities or [m for m in benchmark.modalities if m in encoder.modalities])
    embeddings, rows = {}, []
    for modality in modalities:
        data = benchmark.data[modality]
        embeddings[modality] = embed_all(
            encoder, modality, data.inputs, batch_size=batch_size, progress=progress, shard=True
        )
        if not benchmark.class_names:
            continue  # captions only (e.g. Clotho): caption retrieval has the rows
        centers = benchmark_centers(encoder, benchmark, modality)
        rows.append(zero_shot_row(modality, embeddings[modality], centers, data.labels))
        rows.extend(text_retrieval_rows(modality, embeddings[modality], centers, data.labels))
    for query in modalities:
        for gallery in modalities:
            if query is gallery:
                continue
            query_data, gallery_data = benchmark.data[query], benchmark.data[gallery]
            if query_data.source != gallery_data.source:
                continue  # no shared instances (the spoken digits are not derived from the glyphs)
            query_ids, gallery_ids = query_data.instance_ids, gallery_data.instance_ids
            rows.append(
                instance_retrieval_row(query, gallery, embeddings[query], embeddings[gallery], query_ids, gallery_ids)
            )
    return rows
