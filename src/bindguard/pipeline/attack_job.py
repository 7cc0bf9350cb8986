"""``bindguard.attack_samples``: attack a few samples and keep clean and adversarial inputs to look at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bindguard._checks import check_count, check_seed
from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.data import Benchmark
from bindguard.encoders import Encoder
from bindguard.encoders.expectation import with_expectation
from bindguard.errors import InvalidInputError
from bindguard.evaluation.examples import attack_examples, write_examples
from bindguard.pipeline.provenance import data_fingerprints, provenance
from bindguard.pipeline.setup import (
    check_data_name,
    check_out,
    data_name,
    load_data,
    load_encoder,
)


@dataclass(frozen=True)
class AttackedSamples:
    """Clean and adversarial inputs with predictions (``tensors``), the outcome (``summary``), the file written."""

    tensors: dict[str, torch.Tensor]
    summary: dict
    class_names: tuple[str, ...]
    path: Path | None


def attack_samples(
    encoder: Encoder | str = "tinybind",
    data: Benchmark | str = "builtin",
    *,
    modality: str = "image",
    attack: str = "apgd-ce",
    eps: str | float = "4/255",
    norm: str = "linf",
    steps: int = 50,
    n: int = 8,
    target_modality: str = "audio",
    seed: int = 0,
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
) -> AttackedSamples:
    """Run one attack on the first ``n`` test samples of a modality.

    Args:
        attack: a registered attack; ``steps`` is its iterations (queries for ``square``).
        target_modality: for ``cross-modal``, the modality whose embeddings are the targets.
        out: folder for ``adversarial-<modality>.safetensors`` (None: nothing is written).
        Other arguments as in ``evaluate``.
    """
    out = check_out(out)
    check_data_name(data)
    chosen = Modality.parse(modality)
    if chosen is Modality.TEXT:
        raise InvalidInputError("text is discrete; attacks perturb the other modalities' raw inputs")
    threat = ThreatModel.parse(norm, eps)
    check_count("steps", steps, 1)
    check_count("n", n, 1)
    check_seed(seed)
    options = {"queries": steps} if attack == "square" else ({} if attack == "fgsm" else {"steps": steps})
    attacker = create_attack(attack, threat=threat, seed=seed, **options)
    model = with_expectation(load_encoder(encoder, weights=weights, calibration=calibration, device=device))
    model.check_modality(chosen)
    target = Modality.parse(target_modality) if attack == "cross-modal" else None
    wanted = [chosen] + ([model.check_modality(target)] if target else [])
    benchmark = load_data(data, model, wanted, split="test", limit=n, required=True)
    tensors, outcome = attack_examples(model, benchmark, chosen, attacker, target_modality=target)
    summary = {"model": model.name, "calibration": str(calibration) if calibration else None, "data": data_name(data)}
    summary |= outcome | {"attack": attack, "steps": steps, "seed": seed}
    summary["provenance"] = provenance(
        model=model,
        data=data_name(data),
        fingerprints=data_fingerprints(benchmark),
        seed=seed,
        weights=weights,
        calibration=calibration,
    )
    path = write_examples(out, tensors, summary) if out is not None else None
    return AttackedSamples(tensors, summary, benchmark.class_names, path)
