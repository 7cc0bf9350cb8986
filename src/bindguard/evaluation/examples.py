"""Example perturbations to look at: clean and adversarial inputs with predictions, as one safetensors file.

The file (``adversarial-<modality>.safetensors``) holds tensors ``clean``, ``adversarial``,
``labels``, ``clean_prediction``, ``adversarial_prediction`` and ``norms``; its metadata holds the
attack, budget and outcome as strings. ``bindguard report`` draws them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from bindguard._io import atomic_write_bytes
from bindguard._types import Modality
from bindguard.attacks import Attack
from bindguard.data import Benchmark
from bindguard.data.rows import all_rows
from bindguard.encoders import Encoder
from bindguard.encoders.centers import benchmark_centers
from bindguard.evaluation.clean import embed_all
from bindguard.objectives import ObjectiveContext
from bindguard.objectives.base import center_scores


def attack_examples(
    encoder: Encoder,
    benchmark: Benchmark,
    modality: Modality,
    attack: Attack,
    *,
    target_modality: Modality | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Attack every sample of ``benchmark``'s ``modality``; returns (tensors, outcome summary)."""
    batch = benchmark.data[modality]
    inputs = all_rows(batch.inputs)  # a few samples, kept whole for the example file
    centers = benchmark_centers(encoder, benchmark, modality)
    clean_embedding = embed_all(encoder, modality, inputs)
    target = None
    if target_modality is not None:
        source = benchmark.data[target_modality]
        order = torch.roll(torch.arange(len(source)), 1)[: len(batch)]  # another sample, usually another class
        target = embed_all(encoder, target_modality, all_rows(source.inputs)[order])
    context = ObjectiveContext(
        labels=batch.labels,
        centers=centers,
        clean=clean_embedding,
        target=target,
        logit_scale=encoder.logit_scale(modality),
    )
    result = attack.run(encoder, modality, inputs, context)
    adversarial_prediction = center_scores(embed_all(encoder, modality, result.adversarial), centers).argmax(1)
    clean_prediction = center_scores(clean_embedding, centers).argmax(1)
    tensors = {
        "clean": inputs.contiguous(),
        "adversarial": result.adversarial.contiguous(),
        "labels": batch.labels.contiguous(),
        "clean_prediction": clean_prediction.contiguous(),
        "adversarial_prediction": adversarial_prediction.contiguous(),
        "norms": result.norms.contiguous(),
    }
    summary = {
        "modality": modality.value,
        "attack": attack.name,
        "norm": attack.threat.norm,
        "eps": attack.threat.eps,
        "eps_abs": attack.threat.absolute(encoder.input_spec(modality)),
        "n": len(batch),
        "success_rate": float(result.success.float().mean()),
        "clean_top1": float((clean_prediction == batch.labels).float().mean()),
        "adversarial_top1": float((adversarial_prediction == batch.labels).float().mean()),
        "max_norm": float(result.norms.max()),
    }
    return tensors, summary


def write_examples(directory: Path, tensors: dict[str, torch.Tensor], summary: dict) -> Path:
    path = Path(directory) / f"adversarial-{summary['modality']}.safetensors"
    metadata = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in summary.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path
