"""Semantic centers: per-class text embeddings averaged over prompt templates, frozen and cached."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from bindguard._io import atomic_write_bytes
from bindguard._types import Modality
from bindguard.data import Benchmark
from bindguard.encoders.base import Encoder
from bindguard.errors import ConfigError


def cache_directory() -> Path:
    """Where cached centers live: ``$BINDGUARD_CACHE_DIR`` or ``~/.cache/bindguard``."""
    return Path(os.environ.get("BINDGUARD_CACHE_DIR") or Path.home() / ".cache" / "bindguard")


def _cache_key(encoder: Encoder, class_names: Sequence[str], templates: Sequence[str]) -> str:
    blob = json.dumps({"encoder": encoder.text_identity, "classes": list(class_names), "templates": list(templates)})
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@torch.no_grad()
def compute_semantic_centers(encoder: Encoder, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, D) unit-norm centers: each class's prompt embeddings, normalised, averaged, normalised again."""
    if not class_names or not templates:
        raise ConfigError("semantic centers need at least one class name and one prompt template")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = encoder.encode_modality(Modality.TEXT, prompts)  # (C*T, D), unit norm
    return F.normalize(embeddings.view(len(class_names), len(templates), -1).mean(1), dim=-1)


def semantic_centers(
    encoder: Encoder, class_names: Sequence[str], templates: Sequence[str], *, use_cache: bool = True
) -> torch.Tensor:
    """Like ``compute_semantic_centers``, cached on disk so that evaluation need not load the text tower."""
    if not use_cache:
        return compute_semantic_centers(encoder, class_names, templates)
    path = cache_directory() / "centers" / f"{_cache_key(encoder, class_names, templates)}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["centers"]
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache entry is recomputed and replaced below
    centers = compute_semantic_centers(encoder, class_names, templates).cpu().contiguous()
    atomic_write_bytes(path, save({"centers": centers}))  # also clears temp files of writers that were killed
    return centers


def benchmark_centers(encoder: Encoder, benchmark: Benchmark, modality: Modality) -> torch.Tensor:
    """The centers a benchmark's ``modality`` is scored against: its fixed ``centers`` when it has
    them (e.g. UniBind-style description embeddings), else its templates through the text tower."""
    if benchmark.centers is not None:
        return benchmark.centers.to(encoder.device)
    return semantic_centers(encoder, benchmark.class_names, benchmark.templates[modality])
