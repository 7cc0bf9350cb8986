"""Screen one calibration variant quickly: train it on one modality, measure it before and after.

    python benchmarks/screen_calibration.py NAME MODALITY '{"method": "finetune", "epochs": 8}' [--eval-eps 1/255]

The JSON object holds ``bindguard.calibrate`` keywords: ``recipe`` (a shipped recipe name or a
file, default ``standard``) and any recipe field that replaces the recipe's. Training uses the
whole built-in train split; the measurement is ``bindguard.evaluate_calibration`` on ``--n`` test
samples with the standard ensemble at ``--steps`` and Square ``--square-queries``, sanity checks
off (a screen ranks variants; claims come from ``shipped_calibration.py`` at the full budget).
``--n 200 --steps 100 --square-queries 1000 --checks`` confirms a variant at the full budget, sanity
checks on; its row says so in the budget column.
One JSON line per run is appended to ``benchmarks/results/screen.jsonl``;
``python benchmarks/screen_calibration.py --render`` prints them as a markdown table.
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "screen.jsonl"


def render() -> None:
    print(
        "| run | modality | what changed (bindguard.calibrate keywords) | eval eps | evaluation | trainable "
        "| train s | clean before → after | transfer | adaptive before → after | flags |"
    )
    print("|---|---|---|---|---|---:|---:|---|---:|---|---|")
    for line in RESULTS.read_text().splitlines():
        run = json.loads(line)
        options = json.dumps(run["options"], separators=(", ", ": "))
        note = f" ({run['note']})" if run.get("note") else ""
        budget = run["evaluation"]
        checks = ", checks on" if budget.get("checks") else ""
        evaluation = f"n={budget['n']}, {budget['steps']} steps, Square {budget['square_queries']}{checks}"
        print(
            f"| {run['name']}{note} | {run['modality']} | `{options}` | {eps_text(run['eval_eps'])} | {evaluation} "
            f"| {run['trainable']:,} ({100 * run['trainable_fraction']:.2f}%) | {run['train_s']} "
            f"| {100 * run['clean_before']:.0f} → {100 * run['clean']:.0f} | {100 * run['transfer']:.0f} "
            f"| {100 * run['adaptive_before']:.0f} → **{100 * run['adaptive']:.0f}** | {', '.join(run['flags']) or 'ok'} |"
        )
    print("\nstandard ensemble on the first n test samples; rows from benchmarks/results/screen.jsonl")


def eps_text(eps: object) -> str:
    """Rows record the eps as given ("4/255") or, when it came from the recipe, as a number."""
    if isinstance(eps, str):
        return eps
    return f"{round(float(eps) * 255)}/255" if abs(float(eps) * 255 - round(float(eps) * 255)) < 1e-6 else f"{eps:g}"


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
    parser.add_argument("--checks", action="store_true", help="run the sanity checks (a full-budget confirmation)")
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
        checks=arguments.checks,
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
        "evaluation": {
            "n": arguments.n,
            "steps": arguments.steps,
            "square_queries": arguments.square_queries,
            "checks": arguments.checks,
        },
    }
    print(json.dumps(summary))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as file:
        file.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
