"""Peak memory of an evaluation that streams from a prepared cache: 10,000 generated 224-px images.

    python benchmarks/prepared_memory.py [--images 10000] [--work DIR] [--keep]

1. Writes ``--images`` random 224x224 JPEGs into 10 class folders (``image-folders`` layout).
2. ``bindguard data prepare image-folders`` decodes them at 224 px into safetensors shards (the
   test-only second encoder's image size; ``tests/second_encoder.py``): 10,000 x 3 x 224 x 224
   float32 is 6.0 GB on disk, three times the 2 GB target.
3. In a fresh process, ``bindguard.evaluate`` of the second encoder on ``--data CACHE`` (clean
   zero-shot and retrieval over every sample), and that process's peak resident memory (its
   ``VmHWM``), beside the cache's size. Target: under 2 GB.
"""

from __future__ import annotations

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

choose_wait_policy()  # before torch loads; see benchmarks/README.md ("Threads")

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE = 224
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

EVALUATE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import torch
torch.set_num_threads(2)
import bindguard
from second_encoder import SecondEncoder
started = time.perf_counter()
results = bindguard.evaluate(SecondEncoder(0), sys.argv[1], modalities="image", attacks=None, batch_size=128)
row = next(r for r in results.rows if r.task == "zero-shot")
# VmHWM: this process's own high-water mark. ru_maxrss would also count the parent's size at fork
# (Linux keeps it across exec), and the parent has just prepared gigabytes.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"n": row.n, "seconds": time.perf_counter() - started, "peak_mb": peak / 1024}))
"""


def write_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for index in range(count):
        name = CLASSES[index % len(CLASSES)]
        path = folder / name / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the images and the cache (default: a temp one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the images and the cache")
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="bindguard-memory-"))
    images, cache = work / "images", work / "cache"
    try:
        started = time.perf_counter()
        write_images(images, arguments.images)
        written = time.perf_counter() - started

        sys.path.insert(0, str(ROOT / "tests"))
        import bindguard
        from second_encoder import SecondEncoder

        started = time.perf_counter()
        prepared = bindguard.prepare_data("image-folders", data_root=images, out=cache, model=SecondEncoder(0))
        prepare_seconds = time.perf_counter() - started
        size = sum(path.stat().st_size for path in cache.iterdir())
        result = subprocess.run(
            [sys.executable, "-c", EVALUATE, str(cache), str(ROOT / "tests")],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{arguments.images} images at {SIDE} px -> cache of {prepared.manifest['count']} samples in "
            f"{len(prepared.manifest['shards'])} shards, {size / 1e9:.2f} GB on disk (written in {written:.0f} s, "
            f"prepared in {prepare_seconds:.0f} s)\n"
        )
        print("| samples | cache on disk GB | eval peak resident memory GB | eval s | target |")
        print("|---:|---:|---:|---:|---|")
        print(
            f"| {measured['n']} | {size / 1e9:.2f} | {measured['peak_mb'] / 1024:.2f} | {measured['seconds']:.0f} "
            f"| < 2 GB: {'met' if measured['peak_mb'] < 2048 else 'NOT met'} |"
        )
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
