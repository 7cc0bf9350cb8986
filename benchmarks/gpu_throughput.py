"""PGD-10 on a GPU: images per second in float32 and bfloat16, peak memory, beside torchattacks' PGD.

    python benchmarks/gpu_throughput.py --out gpu.json [--device cuda] [--config huge] [--budget-s 420]

Two models, each attacked by our PGD and by torchattacks' PGD (same eps, step, steps and random
start), timed side by side in one run, with CUDA synchronised around every timed call:

- ImageBind's full-size (``huge``) vision tower, random-initialised (no weights can be downloaded
  here; the cost of a forward+backward does not depend on the values of the weights), on
  224-px images, zero-shot against 1,000 random unit centers.
- TinyBind on each of its six modalities, on the built-in benchmark's test split.

For each model and precision (float32, and bfloat16 autocast around the attack's iterations):
images per second of PGD-10, PGD's time over 10 x one forward+backward (the attack's overhead),
peak GPU memory of the attack, and, for ImageBind, the FLOPs one forward+backward counts
(``torch.utils.flop_counter``) and the TFLOP/s that makes. ``torch.compile`` of the embedding is
timed where the budget allows; it is kept in the library only where it wins.

Results are written to ``--out`` after every section, so a run stopped by its time limit keeps
what it measured. ``--config tiny --device cpu`` runs the same code in seconds (a dry run).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.attacks.pgd import PGD
from bindguard.data import load_dataset
from bindguard.data.builtin.benchmark import TEMPLATES
from bindguard.encoders import Encoder, create_encoder
from bindguard.encoders.centers import compute_semantic_centers
from bindguard.encoders.imagebind.config import get_config
from bindguard.encoders.imagebind.encoder import ImageBind
from bindguard.encoders.imagebind.model import ImageBindNetwork
from bindguard.objectives import ObjectiveContext, ZeroShotCE
from bindguard.pipeline.cost import fitting_batch_size

STEPS = 10
EPS = "4/255"
TINYBIND_MODALITIES = (
    Modality.IMAGE,
    Modality.VIDEO,
    Modality.AUDIO,
    Modality.DEPTH,
    Modality.THERMAL,
    Modality.POINT,
)
PRECISIONS = ("float32", "bfloat16")


class Clock:
    """Wall seconds of a call on ``device``, synchronised before and after (CUDA runs asynchronously)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def median(self, run: Callable[[], object], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            run()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def peak_bytes(self, run: Callable[[], object]) -> int | None:
        """Peak allocated bytes during ``run`` above what was allocated before it (CUDA only)."""
        if self.device.type != "cuda":
            run()
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        run()
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) - before


class Logits(nn.Module):
    """What torchattacks attacks: raw input -> scale * cosine logits, the function ZeroShotCE scores."""

    def __init__(self, encoder: Encoder, modality: Modality, centers: torch.Tensor, scale: float):
        super().__init__()
        self.encoder, self.modality, self.centers, self.scale = encoder, modality, centers, scale
        self.eval()  # torchattacks restores a model's training mode; a new Module starts in it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder.encode_modality(self.modality, x, normalize=True, validate=False)
        return self.scale * embedding.float() @ self.centers.T


def autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def measure(
    encoder: Encoder,
    modality: Modality,
    x: torch.Tensor,
    context: ObjectiveContext,
    clock: Clock,
    repeats: int,
    *,
    precisions: tuple[str, ...] = PRECISIONS,
    torchattacks_too: bool = True,
) -> dict[str, dict[str, float | int | None]]:
    """Per precision: forward+backward, our PGD-10 and torchattacks' PGD-10 on the batch ``x``."""
    objective = ZeroShotCE()
    threat = ThreatModel.linf(EPS)
    step = threat.eps / 4
    attack = PGD(threat, objective=objective, steps=STEPS, step_size=step, random_start=True, early_stop=False)
    batch = x.shape[0]

    def one(precision: str) -> dict[str, float | int | None]:
        def forward_backward() -> torch.Tensor:
            delta = x.detach().requires_grad_(True)
            with torch.enable_grad(), autocast(x.device, precision):
                embedding = encoder.encode_modality(modality, delta, normalize=True, validate=False)
                loss = objective.loss(embedding.float(), context).sum()
            return torch.autograd.grad(loss, delta)[0]

        def ours() -> torch.Tensor:
            with autocast(x.device, precision):
                return attack.run(encoder, modality, x, context).adversarial

        forward_backward()  # first use of the shapes: kernels chosen, memory pooled
        ours()
        row: dict[str, float | int | None] = {"batch": batch}
        row["fwd+bwd s"] = clock.median(forward_backward, repeats + 2)
        row["pgd s"] = clock.median(ours, repeats)
        row["pgd peak GB"] = _gigabytes(clock.peak_bytes(ours))
        row["images/s"] = batch / row["pgd s"]
        row["overhead"] = row["pgd s"] / (STEPS * row["fwd+bwd s"])
        if torchattacks_too:
            import torchattacks  # test-only reference; the benchmark alone imports it

            model = Logits(encoder, modality, context.centers, context.logit_scale)
            reference = torchattacks.PGD(
                model, eps=threat.absolute(encoder.input_spec(modality)), alpha=step, steps=STEPS
            )
            if encoder.input_spec(modality).domain == (0.0, 1.0):

                def theirs() -> torch.Tensor:
                    with autocast(x.device, precision):
                        return reference(x, context.labels)

                theirs()
                row["torchattacks pgd s"] = clock.median(theirs, repeats)
                row["torchattacks images/s"] = batch / row["torchattacks pgd s"]
                row["throughput ratio"] = row["torchattacks pgd s"] / row["pgd s"]
        return row

    rows: dict[str, dict[str, float | int | None]] = {}
    for precision in precisions:
        if precision == "bfloat16" and x.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        rows[precision] = one(precision)
    return rows


def imagebind_section(
    device: torch.device, config: str, batches: dict[str, int], repeats: int, clock: Clock
) -> dict[str, object]:
    sizes = get_config(config)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        network = ImageBindNetwork(sizes)
    network.requires_grad_(False).eval()
    encoder = ImageBind(network).eval()
    vision_parameters = sum(p.numel() for n, p in network.named_parameters() if ".vision" in n or "vision." in n)
    generator = torch.Generator(device="cpu").manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(1000, sizes.out_dim, generator=generator), dim=1).to(device)
    fitting = fitting_batch_size(encoder, [Modality.IMAGE], max(batches.values()))
    section: dict[str, object] = {
        "config": config,
        "vision parameters": vision_parameters,
        "fitting batch (float32 estimate, of the largest asked)": fitting,
    }
    flops = _flops_per_sample(encoder, centers, device)
    section["fwd+bwd GFLOP per image"] = flops / 1e9
    for precision in PRECISIONS:
        batch = min(batches[precision], fitting if precision == "float32" else 2 * fitting)
        x = torch.rand(batch, 3, 224, 224, generator=generator).to(device)
        with torch.no_grad():
            labels = (encoder.encode_modality(Modality.IMAGE, x, validate=False) @ centers.T).argmax(1)
        context = ObjectiveContext(labels=labels, centers=centers, logit_scale=100.0)
        row = measure(encoder, Modality.IMAGE, x, context, clock, repeats, precisions=(precision,))
        if precision in row:
            result = row[precision]
            result["TFLOP/s in PGD"] = flops * batch * STEPS / result["pgd s"] / 1e12
            section[precision] = result
        print(f"imagebind {config} {precision}: {section.get(precision)}", file=sys.stderr, flush=True)
    return section


def tinybind_section(device: torch.device, batch: int, repeats: int, clock: Clock) -> dict[str, object]:
    encoder = create_encoder("tinybind", device=str(device))
    data = load_dataset("builtin", split="test", modalities=list(TINYBIND_MODALITIES), limit=batch)
    section: dict[str, object] = {}
    for modality in TINYBIND_MODALITIES:
        centers = compute_semantic_centers(encoder, data.class_names, TEMPLATES[modality]).to(device)
        x = data.data[modality].inputs.to(device)
        labels = data.data[modality].labels.to(device)
        context = ObjectiveContext(labels=labels, centers=centers, logit_scale=encoder.logit_scale(modality))
        section[modality.value] = measure(encoder, modality, x, context, clock, repeats)
        print(f"tinybind {modality.value}: {section[modality.value]}", file=sys.stderr, flush=True)
    return section


def compile_section(device: torch.device, config: str, batch: int, repeats: int, clock: Clock) -> dict[str, object]:
    """torch.compile of the embedding (``Encoder._embed``): forward+backward and PGD-10, eager beside compiled."""
    section: dict[str, object] = {}
    tinybind = create_encoder("tinybind", device=str(device))
    sizes = get_config(config)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        network = ImageBindNetwork(sizes)
    imagebind = ImageBind(network.requires_grad_(False).eval()).eval()
    for name, encoder, side, out_dim, count in (
        ("tinybind image", tinybind, None, None, 256),
        (f"imagebind {config} image (bfloat16)", imagebind, 224, sizes.out_dim, batch),
    ):
        precision = "bfloat16" if "bfloat16" in name else "float32"
        spec = encoder.input_spec(Modality.IMAGE)
        shape = spec.shape if side is None else (3, side, side)
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand(count, *shape, generator=generator).to(device)
        dim = out_dim or encoder.encode_modality(Modality.IMAGE, x[:1], validate=False).shape[1]
        centers = torch.nn.functional.normalize(torch.randn(100, dim, generator=generator), dim=1).to(device)
        with torch.no_grad():
            labels = (encoder.encode_modality(Modality.IMAGE, x, validate=False) @ centers.T).argmax(1)
        context = ObjectiveContext(labels=labels, centers=centers, logit_scale=100.0)
        only = {"precisions": (precision,), "torchattacks_too": False}
        eager = measure(encoder, Modality.IMAGE, x, context, clock, repeats, **only)[precision]
        start = time.perf_counter()
        encoder._embed = torch.compile(encoder._embed)  # an instance attribute: the class stays eager
        compiled = measure(encoder, Modality.IMAGE, x, context, clock, repeats, **only)[precision]
        section[name] = {
            "eager": eager,
            "compiled": compiled,
            "compile + first runs s": time.perf_counter() - start,
            "pgd speedup": eager["pgd s"] / compiled["pgd s"],
            "fwd+bwd speedup": eager["fwd+bwd s"] / compiled["fwd+bwd s"],
        }
        del encoder._embed
        print(f"compile {name}: {section[name]}", file=sys.stderr, flush=True)
    return section


def _flops_per_sample(encoder: ImageBind, centers: torch.Tensor, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(2, 3, 224, 224, device=device, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter, torch.enable_grad():
        embedding = encoder.encode_modality(Modality.IMAGE, x, normalize=True, validate=False)
        torch.autograd.grad((embedding @ centers.T).sum(), x)
    return counter.get_total_flops() / 2


def _gigabytes(value: int | None) -> float | None:
    return None if value is None else value / 1e9


def environment(device: torch.device) -> dict[str, object]:
    found: dict[str, object] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found |= {
            "gpu": properties.name,
            "gpu memory GB": properties.total_memory / 1e9,
            "cuda": torch.version.cuda,
            "bf16 supported": torch.cuda.is_bf16_supported(),
            "tf32 matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="results JSON, rewritten after every section")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="huge", help="ImageBind size: huge (default) or tiny (dry run)")
    parser.add_argument("--fp32-batch", type=int, default=32, help="ImageBind batch in float32 (default 32)")
    parser.add_argument("--bf16-batch", type=int, default=128, help="ImageBind batch in bfloat16 (default 128)")
    parser.add_argument("--tinybind-batch", type=int, default=256, help="TinyBind batch (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, median (default 3)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip torch.compile past this many seconds")
    parser.add_argument(
        "--sections", default="imagebind,tinybind,compile", help="which to run, in order (default: all three)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    clock = Clock(device)
    started = time.perf_counter()
    results: dict[str, object] = {
        "command": "python benchmarks/gpu_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": environment(device),
        "steps": STEPS,
        "eps": EPS,
        "repeats": args.repeats,
    }
    for name in args.sections.split(","):
        elapsed = time.perf_counter() - started
        if name == "compile" and elapsed > args.budget_s:
            results[name] = {"skipped": f"{elapsed:.0f} s elapsed, over --budget-s {args.budget_s:.0f}"}
            continue
        try:
            if name == "imagebind":
                batches = {"float32": args.fp32_batch, "bfloat16": args.bf16_batch}
                results[name] = imagebind_section(device, args.config, batches, args.repeats, clock)
            elif name == "tinybind":
                results[name] = tinybind_section(device, args.tinybind_batch, args.repeats, clock)
            elif name == "compile":
                results[name] = compile_section(device, args.config, args.bf16_batch, args.repeats, clock)
            else:
                raise SystemExit(f"unknown section {name!r}; allowed: imagebind, tinybind, compile")
        except Exception:  # a failed section must not lose the others' figures
            results[name] = {"error": traceback.format_exc()}
            print(traceback.format_exc(), file=sys.stderr, flush=True)
        results["wall s"] = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.empty_cache()
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
