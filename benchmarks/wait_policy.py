"""How OpenMP's wait policy changes a forward+backward, on idle cores and on cores another job uses.

    python benchmarks/wait_policy.py [--repeats R] [--batches 1,4,8,32] [--json]
    python benchmarks/wait_policy.py --render benchmarks/results/wait-policy.json

The evidence behind bindguard._openmp's choice (spin on idle cores, sleep on shared ones). Each
policy runs in its own process, since OpenMP reads the variable once, when torch loads. The model
is what `bindguard eval` attacks: TinyBind's image tower as `create_encoder("tinybind")` builds it,
2 threads, medians of R timed forward+backward passes after 3 untimed ones. "Shared" runs a second
process beside it, a 2-thread float32 matrix-product loop that sleeps its idle threads, for as
long as the measurement takes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

POLICIES = {"PASSIVE": "PASSIVE", "OpenMP default": None, "ACTIVE": "ACTIVE"}

HOG = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""


def measure(batches: list[int], repeats: int) -> dict[str, float]:
    """Median milliseconds of one forward+backward of TinyBind image at each batch (this process's policy)."""
    import statistics

    import torch

    from bindguard._types import Modality
    from bindguard.attacks.base import loss_and_gradient
    from bindguard.data import load_dataset
    from bindguard.data.builtin.benchmark import TEMPLATES
    from bindguard.encoders import create_encoder
    from bindguard.encoders.centers import semantic_centers
    from bindguard.objectives import ObjectiveContext, ZeroShotCE

    torch.set_num_threads(2)
    encoder = create_encoder("tinybind")
    benchmark = load_dataset("builtin", split="test", modalities=[Modality.IMAGE], limit=max(batches))
    data = benchmark.data[Modality.IMAGE]
    centers = semantic_centers(encoder, benchmark.class_names, TEMPLATES[Modality.IMAGE])
    objective = ZeroShotCE()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return encoder.encode_modality(Modality.IMAGE, x, normalize=True, validate=False)

    times = {}
    for batch in batches:
        x = data.inputs[:batch]
        context = ObjectiveContext(labels=data.labels[:batch], centers=centers)
        samples = []
        for index in range(3 + repeats):
            start = time.perf_counter()
            loss_and_gradient(forward, objective, x, context)
            if index >= 3:
                samples.append(time.perf_counter() - start)
        times[str(batch)] = round(1000 * statistics.median(samples), 1)
    return times


def run_policy(policy: str | None, batches: list[int], repeats: int, shared: bool) -> dict[str, float]:
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        environment["OMP_WAIT_POLICY"] = policy
    hog = None
    if shared:
        hog = subprocess.Popen(
            [sys.executable, "-c", HOG], env=environment | {"OMP_WAIT_POLICY": "PASSIVE"}, stdout=subprocess.DEVNULL
        )
        time.sleep(1.0)
    try:
        command = [sys.executable, __file__, "--measure", "--batches", ",".join(map(str, batches))]
        command += ["--repeats", str(repeats)]
        output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(output)


def print_table(rows: list[dict], settings: dict) -> None:
    batches = list(rows[0]["ms"])
    print(
        f"TinyBind image forward+backward, 2 threads on {settings['cpus']} CPUs, median ms of {settings['repeats']}; "
        f"load average before {settings['load before']}; wall {settings['wall s']} s\n"
    )
    print("| OMP_WAIT_POLICY | cores | " + " | ".join(f"batch {batch}" for batch in batches) + " |")
    print("|---|---|" + "---:|" * len(batches))
    for row in rows:
        print(f"| {row['policy']} | {row['cores']} | " + " | ".join(f"{row['ms'][batch]}" for batch in batches) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed passes per batch (default 9)")
    parser.add_argument("--batches", default="1,4,8,32", help="batch sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--render", metavar="JSON", help="print the table of a saved --json run instead of measuring")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one policy, in this process
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as stream:
            saved = json.load(stream)
        print_table(saved["rows"], saved["settings"])
        return 0
    batches = [int(value) for value in args.batches.split(",")]
    if args.measure:
        print(json.dumps(measure(batches, args.repeats)))
        return 0
    started = time.perf_counter()
    load_before = " ".join(f"{value:.1f}" for value in os.getloadavg())
    rows = []
    for shared in (False, True):
        for name, policy in POLICIES.items():
            times = run_policy(policy, batches, args.repeats, shared)
            rows.append({"policy": name, "cores": "shared" if shared else "idle", "ms": times})
            print(f"done: {name}, {'shared' if shared else 'idle'}", file=sys.stderr, flush=True)
    settings = {
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "load before": load_before,
        "wall s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps({"settings": settings, "rows": rows}, indent=2))
        return 0
    print_table(rows, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
