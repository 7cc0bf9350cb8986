"""Our standard ensemble beside AutoAttack ``standard`` (the reference ``pyautoattack``), on the same model,
samples and eps: robust accuracy, per-sample agreement and wall time, measured in one run.

    python benchmarks/autoattack_side_by_side.py [--rows tinybind,shipped,lite0] [--n 100] [--eps 4/255]

Rows:

- ``tinybind``: TinyBind's image tower as a zero-shot classifier over the built-in test split
  (logits: logit scale x cosine to the frozen text centers, the decision every bindguard row uses);
- ``shipped``: the same with the calibration that ships with TinyBind (``calibration="shipped"``),
  attacked end to end through it;
- ``lite0``: the real ImageNet EfficientNet-Lite0 on the scikit-image photos at 64x64, labelled with
  its own clean predictions (eps ``--lite0-eps``, default 1/255: at 4/255 nothing survives either).

AutoAttack ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries), 100
iterations each, seed 0. Ours: APGD-CE, APGD-T (3 targets), rank, embed (``--steps``) and Square
(``--square-queries``), sanity checks off (AutoAttack runs none of its costly ones either), and
like AutoAttack attacking a sample only while its top-1 survives (``--top5`` keeps attacking while
its top-5 survives, bindguard's default, which costs more). A sample is robust when its top-1
survives every attack. ``ours robust only`` counts samples we left robust
that AutoAttack broke: where our ensemble is weaker. pyautoattack is a test-only reference
(``pip install -e '.[dev]'``).
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.data import load_dataset
from bindguard.encoders import Encoder, create_encoder
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.encoders.efficientnet_lite import load_pretrained_lite0
from bindguard.encoders.expectation import with_expectation
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE
from bindguard.evaluation.robust import RobustSettings, evaluate_modality_threat
from bindguard.evaluation.state import RunState
from bindguard.modalities.pixels import IMAGENET_MEAN, IMAGENET_STD

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "retina", "horse", "coins")
SIDE = 64


class Logits(nn.Module):
    """What AutoAttack attacks: raw [0, 1] pixels in, the encoder's own class scores out."""

    def __init__(self, encoder: Encoder, centers: torch.Tensor, scale: float):
        super().__init__()
        self.encoder, self.scale = encoder, scale
        self.register_buffer("centers", centers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder.encode_modality(Modality.IMAGE, x, validate=False)
        return self.scale * F.normalize(embedding, dim=-1) @ self.centers.T


def _tinybind(calibration: str | None, n: int) -> tuple[Encoder, torch.Tensor, torch.Tensor, torch.Tensor]:
    encoder = with_expectation(create_encoder("tinybind", calibration=calibration)).eval()
    test = load_dataset("builtin", split="test", modalities=[Modality.IMAGE], limit=n)
    data = test.data[Modality.IMAGE]
    centers = semantic_centers(encoder, test.class_names, test.templates[Modality.IMAGE])
    return encoder, data.inputs[: len(data)], data.labels, centers


def _lite0() -> tuple[Encoder, torch.Tensor, torch.Tensor, torch.Tensor]:
    from skimage import data as skimage_data

    encoder = ClassifierEncoder(
        load_pretrained_lite0().requires_grad_(False), height=SIDE, width=SIDE, classes=1000,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    ).eval()  # fmt: skip
    batch = []
    for name in PHOTOS:
        image = torch.from_numpy(getattr(skimage_data, name)()).float()
        image = image / (255 if image.max() > 1 else 1)
        image = image[..., None].expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
        image = F.interpolate(image.permute(2, 0, 1)[None], size=(SIDE, SIDE), mode="bilinear", antialias=True)
        batch.append(image.clamp(0, 1))
    x = torch.cat(batch)
    centers = torch.eye(1000)  # the logits' own classes: cosine to a one-hot is the normalised logit
    with torch.no_grad():
        labels = encoder.encode_modality(Modality.IMAGE, x).argmax(1)
    return encoder, x, labels, centers


def side_by_side(name: str, arguments: argparse.Namespace) -> dict:
    if name == "lite0":
        encoder, x, labels, centers = _lite0()
        eps = ThreatModel.linf(arguments.lite0_eps)
    else:
        encoder, x, labels, centers = _tinybind("shipped" if name == "shipped" else None, arguments.n)
        eps = ThreatModel.linf(arguments.eps)
    scale = encoder.logit_scale(Modality.IMAGE) if name != "lite0" else 1.0
    settings = RobustSettings(
        ensemble=STANDARD_ENSEMBLE, steps=arguments.steps, square_queries=arguments.square_queries, checks=False,
        batch_size=arguments.batch_size, top5=arguments.top5,
    )  # fmt: skip
    started = time.perf_counter()
    ours, _ = evaluate_modality_threat(
        encoder, Modality.IMAGE, x, labels, centers, eps, settings, state=RunState(None, {})
    )
    our_seconds = time.perf_counter() - started

    from pyautoattack import AutoAttack

    classifier = Logits(encoder, centers, scale).eval()
    absolute = eps.eps * encoder.input_spec(Modality.IMAGE).range
    reference = AutoAttack(classifier, norm="Linf", eps=absolute, version="standard", seed=0, device="cpu")
    reference.verbose = False
    started = time.perf_counter()
    _, predicted = reference.run_standard_evaluation(x, labels, batch_size=arguments.batch_size)
    their_seconds = time.perf_counter() - started
    theirs = predicted.cpu() == labels

    ours_top1 = ours.top1
    return {
        "row": name,
        "eps": arguments.lite0_eps if name == "lite0" else arguments.eps,
        "eps_abs": absolute,
        "n": len(labels),
        "ours": float(ours_top1.float().mean()),
        "autoattack": float(theirs.float().mean()),
        "agreement": float((ours_top1 == theirs).float().mean()),
        "ours_robust_only": int((ours_top1 & ~theirs).sum()),
        "autoattack_robust_only": int((theirs & ~ours_top1).sum()),
        "our_seconds": our_seconds,
        "autoattack_seconds": their_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="tinybind,shipped,lite0")
    parser.add_argument("--n", type=int, default=100, help="TinyBind test samples")
    parser.add_argument("--eps", default="4/255")
    parser.add_argument("--lite0-eps", default="1/255")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--top5", action=argparse.BooleanOptionalAction, default=False,
        help="also keep attacking samples whose top-5 survives (bindguard's default; AutoAttack tracks top-1 only)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    rows = [side_by_side(name, arguments) for name in arguments.rows.split(",")]
    print(
        f"ours: standard ensemble, {arguments.steps} steps + Square {arguments.square_queries}, checks off, "
        f"{'top-1 and top-5' if arguments.top5 else 'top-1'} tracked; "
        f"AutoAttack standard (pyautoattack, seed 0); {torch.get_num_threads()} threads, batch {arguments.batch_size}\n"
    )
    print(
        "| row | Linf eps (abs) | n | ours robust | AutoAttack robust | agree | ours robust only | AutoAttack robust only "
        "| ours s | AutoAttack s | time ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['row']} | {row['eps']} ({row['eps_abs']:.4f}) | {row['n']} | {100 * row['ours']:.1f}% "
            f"| {100 * row['autoattack']:.1f}% | {100 * row['agreement']:.1f}% | {row['ours_robust_only']} "
            f"| {row['autoattack_robust_only']} | {row['our_seconds']:.0f} | {row['autoattack_seconds']:.0f} "
            f"| {row['our_seconds'] / row['autoattack_seconds']:.2f} |"
        )
    if arguments.json:
        arguments.json.write_text(
            json.dumps({"arguments": vars(arguments) | {"json": str(arguments.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
