"""How an evaluation's wall time grows with samples, steps, batch size and input size, and how well
``bindguard eval --estimate`` predicts it.

    python benchmarks/cost_curves.py [--modality image] [--json curves.json]

Each point is one ``bindguard.evaluate`` of TinyBind on the built-in test split with APGD-CE at
Linf 4/255 (checks and Square off, so the attack is the whole cost), timed, beside the prediction
``bindguard.estimate`` makes for the same arguments before running anything. One setting varies
at a time around the base (``--n``, ``--steps``, ``--batch-size``); input size varies by modality
(every modality at the base setting, its raw input's number of values on the x axis). The fitted
slope is d log(time) / d log(setting): 1 means time proportional to it. A sample broken early is
no longer attacked, so the actual time lies between the estimate's least and most.
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import math
import time
from pathlib import Path

import torch

import bindguard
from bindguard._types import PERCEPTUAL_MODALITIES
from bindguard.encoders import create_encoder


def _point(encoder, modality: str, *, n: int, steps: int, batch_size: int) -> dict:
    settings = {
        "attacks": "apgd-ce",
        "eps": ["4/255"],
        "n": n,
        "modalities": modality,
        "steps": steps,
        "square_queries": 0,
        "checks": False,
        "batch_size": batch_size,
    }
    predicted = bindguard.estimate(encoder, "builtin", **settings)
    started = time.perf_counter()
    results = bindguard.evaluate(encoder, "builtin", **settings)
    seconds = time.perf_counter() - started
    robust = next(row for row in results.robust)
    spec = encoder.input_spec(modality)
    return {
        "modality": modality,
        "n": n,
        "steps": steps,
        "batch_size": batch_size,
        "input_values": math.prod(spec.shape),
        "seconds": seconds,
        "least": predicted.least_seconds,
        "most": predicted.most_seconds,
        "robust_top1": robust.top1,
    }


def _slope(points: list[dict], key: str) -> float:
    """Least-squares slope of log(seconds) against log(points[key])."""
    xs = [math.log(point[key]) for point in points]
    ys = [math.log(point["seconds"]) for point in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", default="image")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    encoder = create_encoder("tinybind")
    base = {"n": arguments.n, "steps": arguments.steps, "batch_size": arguments.batch_size}
    _point(encoder, arguments.modality, **base)  # untimed: the first run pays for caches, kernels and text centers
    curves: dict[str, list[dict]] = {}
    for key, values in (
        ("n", (arguments.n // 2, arguments.n, arguments.n * 2)),
        ("steps", (arguments.steps // 2, arguments.steps, arguments.steps * 2)),
        ("batch_size", (max(arguments.batch_size // 4, 1), arguments.batch_size // 2, arguments.batch_size)),
    ):
        curves[key] = [_point(encoder, arguments.modality, **(base | {key: value})) for value in values]
    curves["input_values"] = [_point(encoder, m.value, **base) for m in PERCEPTUAL_MODALITIES]

    print(
        f"TinyBind, built-in test split, APGD-CE Linf 4/255, checks and Square off; base: {arguments.modality}, "
        f"n={arguments.n}, steps={arguments.steps}, batch {arguments.batch_size}; {torch.get_num_threads()} threads\n"
    )
    print(
        "| varied | modality | n | steps | batch | input values | actual s | estimate least-most s | actual / least |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for key, points in curves.items():
        for point in points:
            print(
                f"| {key} | {point['modality']} | {point['n']} | {point['steps']} | {point['batch_size']} | "
                f"{point['input_values']:,} | {point['seconds']:.1f} | {point['least']:.1f}-{point['most']:.1f} | "
                f"{point['seconds'] / point['least']:.2f} |"
            )
    print("\n| setting | fitted slope of log time |")
    print("|---|---:|")
    for key, points in curves.items():
        print(f"| {key} | {_slope(points, key):.2f} |")
    if arguments.json:
        arguments.json.write_text(
            json.dumps({"arguments": vars(arguments) | {"json": str(arguments.json)}, "curves": curves}, indent=2)
        )


if __name__ == "__main__":
    main()
