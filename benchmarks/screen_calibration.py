"""Screen one calibration variant quickly: train it on one modality, measure it before and after.

    python benchmarks/screen_calibration.py NAME MODALITY '{"method": "finetune", "epochs": 8}' [--eval-eps 1/255]

The JSON object holds ``bindguard.calibrate`` keywords: ``recipe`` (a shipped recipe name or a
file, default ``standard``) and any recipe field that replaces the recipe's. Training uses the
whole built-in train split; the measurement is ``bindguard.evaluate_calibration`` on ``--n`` test
samples with the standard ensemble at ``--steps`` and Square ``--square-queries``, sanity checks
off (a screen ranks variants; claims come from ``shipped_calibration.py`` at the full budget).
One JSON line per run is appended to ``benchmarks/results/screen.jsonl``;
``python benchmarks/screen_calibration.py --render`` prints them as a markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see benchmarks/README.md

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "screen.jsonl"


def render() -> None:
    print(
        "| run | modality | what changed (bindguard.calibrate keywords) | eval eps | trainable | train s "
        "| clean before → after | transfer | adaptive before → after | flags |"
    )
    print("|---|---|---|---|---:|---:|---|---:|---|---|")
    for line in RESULTS.read_text().splitlines():
        run = json.loads(line)
        options = json.dumps(run["options"], separators=(", ", ": "))
        note = f" ({run['note']})" if run.get("note") else ""
        print(
            f"| {run['name']}{note} | {run['modality']} | `{options}` | {run['eval_eps']} "
            f"| {run['trainable']:,} ({100 * run['trainable_fraction']:.2f}%) | {run['train_s']} "
            f"| {100 * run['clean_before']:.0f} → {100 * run['clean']:.0f} | {100 * run['transfer']:.0f} "
            f"| {100 * run['adaptive_before']:.0f} → **{100 * run['adaptive']:.0f}** | {', '.join(run['flags']) or 'ok'} |"
        )
    first = json.loads(RESULTS.read_text().splitlines()[0])["evaluation"]
    print(
        f"\nstandard ensemble, {first['steps']} steps, Square {first['square_queries']}, n={first['n']} test "
        "samples, sanity checks off; rows from benchmarks/results/screen.jsonl"
    )


def main() -> None:
    if "--render" in sys.argv[1:]:
        render()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("modality")
    parser.add_argument("options", help="JSON object of bindguard.calibrate keywords")
    parser.add_argument("--eval-eps", default=None, help="default: the eps it was trained at")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--square-queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/screen"))
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    import bindguard

    options = json.loads(arguments.options)
    recipe = options.pop("recipe", "standard")
    out = arguments.out / arguments.name
    started = time.perf_counter()
    calibrated = bindguard.calibrate(
        "tinybind", "builtin", modalities=arguments.modality, out=out, recipe=recipe, **options
    )
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    results = bindguard.evaluate_calibration(
        calibrated,
        "builtin",
        n=arguments.n,
        steps=arguments.steps,
        square_queries=arguments.square_queries,
        checks=False,
        out=out,
        eps=arguments.eval_eps,
    )
    row = results.calibration[0].to_dict()
    summary = {
        "name": arguments.name,
        "modality": arguments.modality,
        "options": options | {"recipe": recipe},
        "eval_eps": arguments.eval_eps or row["eps"],
        "train_s": round(train_seconds),
        "eval_s": round(time.perf_counter() - started),
        "trainable": calibrated.calibrations[arguments.modality].trainable_parameters(),
        "clean_before": row["before"]["clean_top1"],
        "clean": row["after"]["clean_top1"],
        "transfer": row["after"]["transfer_top1"],
        "adaptive_before": row["before"]["robust_top1"],
        "adaptive": row["after"]["robust_top1"],
        "trainable_fraction": row["trainable_fraction"],
        "flags": row["flags"],
        "evaluation": {"n": arguments.n, "steps": arguments.steps, "square_queries": arguments.square_queries},
    }
    print(json.dumps(summary))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as file:
        file.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
