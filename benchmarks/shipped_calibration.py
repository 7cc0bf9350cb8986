"""The calibration that ships with TinyBind, measured before and after at the full budget.

    python benchmarks/shipped_calibration.py --modalities image,depth --eps 4/255 --n 200
    python benchmarks/shipped_calibration.py --render          # the table of every run so far

Each (modality, eps) is one ``bindguard.evaluate_calibration`` run of ``calibration="shipped"``
with the standard ensemble (APGD-CE, APGD-T with 3 targets, rank, embed; ``--steps``) and Square
(``--square-queries``), sanity checks on, written to ``benchmarks/results/shipped/<modality>-<eps>/``
(``results.json``, resumable state). ``--render`` prints the markdown table the README shows, from
those files only, with the command that made each row.
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "shipped"


def _folder(modality: str, eps: str) -> Path:
    return RESULTS / f"{modality}-{eps.replace('/', 'of')}"


def run(arguments: argparse.Namespace) -> None:
    import bindguard
    from bindguard.encoders import create_encoder

    shipped = create_encoder("tinybind", calibration="shipped")
    for modality in arguments.modalities.split(","):
        for eps in arguments.eps.split(","):
            started = time.perf_counter()
            only = create_encoder("tinybind", calibration="shipped")
            only.calibrations = torch.nn.ModuleDict({modality: shipped.calibrations[modality]})
            only.source = shipped.source
            folder = _folder(modality, eps)
            results = bindguard.evaluate_calibration(
                only,
                "builtin",
                eps=eps,
                n=arguments.n,
                steps=arguments.steps,
                square_queries=arguments.square_queries,
                out=folder,
            )
            command = (
                f"python benchmarks/shipped_calibration.py --modalities {modality} --eps {eps} --n {arguments.n} "
                f"--steps {arguments.steps} --square-queries {arguments.square_queries}"
            )
            (folder / "command.txt").write_text(command + "\n")
            row = results.calibration[0].to_dict()
            print(
                f"{modality} {eps}: clean {row['before']['clean_top1']:.3f} -> {row['after']['clean_top1']:.3f}, "
                f"adaptive {row['before']['robust_top1']:.3f} -> {row['after']['robust_top1']:.3f}, "
                f"flags {row['flags']}, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )


def render() -> None:
    print(
        "| modality | Linf eps (abs) | clean before → after | transfer | adaptive before → after (95% CI) "
        "| adaptive top-5 after | n | trainable | flags | command |"
    )
    print("|---|---|---|---:|---|---:|---:|---:|---|---|")
    for folder in sorted(RESULTS.iterdir()):
        path = folder / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        row = next(r for r in results["rows"] if r.get("task") == "calibration")
        before, after = row["before"], row["after"]
        low, high = after["robust_top1_ci95"]
        command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").is_file() else "?"
        eps = f"{round(row['eps'] * 255)}/255 ({row['eps_abs']:.4f})"
        print(
            f"| {row['modality']} | {eps} | {100 * before['clean_top1']:.1f} → {100 * after['clean_top1']:.1f} "
            f"| {100 * after['transfer_top1']:.1f} | {100 * before['robust_top1']:.1f} → "
            f"**{100 * after['robust_top1']:.1f}** ({100 * low:.0f}–{100 * high:.0f}) | {100 * after['robust_top5']:.1f} "
            f"| {row['n']} | {100 * row['trainable_fraction']:.2f}% | {', '.join(row['flags']) or 'none'} "
            f"| `{shlex.join(shlex.split(command))}` |"
        )
    print(
        "\nstandard ensemble (APGD-CE, APGD-T 3 targets, rank, embed) + Square, sanity checks on; "
        "rows from benchmarks/results/shipped/*/results.json"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", default="image,video,depth,thermal,audio,point,event")
    parser.add_argument("--eps", default="4/255", help="comma-separated relative Linf budgets")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="print the table of the saved runs and exit")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    render() if arguments.render else run(arguments)


if __name__ == "__main__":
    main()
