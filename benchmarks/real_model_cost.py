"""What a full-size ImageBind costs per sample, counted without weights or a GPU; and what that predicts.

The huge network is built on the ``meta`` device (shapes only, no memory), so this runs anywhere
in seconds. For each modality it counts, for one forward+backward to the raw input of one sample:

- the floating-point operations (``torch.utils.flop_counter``), and
- the activation memory autograd keeps (bytes of the tensors saved for backward: batch 2 minus
  batch 1, so the frozen weights, saved once whatever the batch, cancel out).

From them it predicts the time of the standard robust evaluation (every attack of the ensemble
for ``--steps`` steps, Square for ``--square-queries`` queries as forward passes at a third of a
forward+backward each) on ``--samples`` samples, at an ASSUMED sustained throughput ``--tflops``,
and the memory of a batch. Both are upper bounds of a kind: every sample is taken to stay robust
through every attack (robust evaluation stops attacking a sample once it is broken), and no
kernel fusion is credited. The throughput is an assumption, not a measurement: pass the figure
your GPU sustains (a measured one where a GPU is lent).

    .venv/bin/python benchmarks/real_model_cost.py --markdown
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from bindguard._types import Modality
from bindguard.encoders.imagebind.config import HUGE
from bindguard.encoders.imagebind.encoder import ImageBind
from bindguard.encoders.imagebind.model import ImageBindNetwork
from bindguard.evaluation.ensemble import parse_ensemble
from bindguard.evaluation.robust import RobustSettings
from bindguard.pipeline.cost import passes_per_sample


def saved_bytes(encoder: ImageBind, modality: Modality, batch: int) -> int:
    """Bytes of the tensors autograd saves in one forward of ``batch`` raw samples (meta tensors)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    x = torch.empty((batch, *encoder.input_spec(modality).shape), device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        encoder.encode_modality(modality, x, validate=False, normalize=False)
    return total


def flops_of_one_pass(encoder: ImageBind, modality: Modality) -> int:
    """Operations of one forward+backward of one raw sample, to its input gradient."""
    x = torch.empty((1, *encoder.input_spec(modality).shape), device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        encoder.encode_modality(modality, x, validate=False, normalize=False).sum().backward()
    return counter.get_total_flops()


def measure(*, tflops: float, steps: int, square_queries: int, samples: int, batch: int) -> dict:
    with torch.device("meta"):
        network = ImageBindNetwork(HUGE)
    encoder = ImageBind(network)
    weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    settings = RobustSettings(ensemble=parse_ensemble("standard"), steps=steps, square_queries=square_queries)
    passes = passes_per_sample(settings, threats=1)
    rows = []
    for modality in (m for m in encoder.modalities if m is not Modality.TEXT):
        flops = flops_of_one_pass(encoder, modality)
        activations = saved_bytes(encoder, modality, 2) - saved_bytes(encoder, modality, 1)
        rows.append(
            {
                "modality": modality.value,
                "input": list(encoder.input_spec(modality).shape),
                "gflops_forward_backward": flops / 1e9,
                "activation_mb_per_sample": activations / 2**20,
                "passes_per_sample": passes,
                "predicted_hours": samples * passes * flops / (tflops * 1e12) / 3600,
                "batch_memory_gb": (weights + batch * activations) / 2**30,
            }
        )
    return {
        "model": "ImageBind huge (all six towers' weights in memory, fp32)",
        "weights_gb": weights / 2**30,
        "assumed_tflops": tflops,
        "steps": steps,
        "square_queries": square_queries,
        "samples": samples,
        "batch": batch,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"ImageBind huge, fp32 weights {result['weights_gb']:.1f} GB; standard ensemble, {result['steps']} steps, "
        f"Square {result['square_queries']} queries, one eps, {result['samples']} samples; "
        f"time at an ASSUMED sustained {result['assumed_tflops']:g} TFLOP/s; memory at batch {result['batch']}.",
        "",
        "| modality | raw input | GFLOP per fwd+bwd | activations MB per sample | passes per sample "
        "| predicted hours | memory GB at the batch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['modality']} | {'×'.join(map(str, row['input']))} | {row['gflops_forward_backward']:.0f} | "
            f"{row['activation_mb_per_sample']:.0f} | {row['passes_per_sample']:.0f} | {row['predicted_hours']:.1f} | "
            f"{row['batch_memory_gb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s of the GPU")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--markdown", action="store_true")
    arguments = parser.parse_args()
    result = measure(
        tflops=arguments.tflops,
        steps=arguments.steps,
        square_queries=arguments.square_queries,
        samples=arguments.samples,
        batch=arguments.batch,
    )
    print(markdown(result) if arguments.markdown else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
