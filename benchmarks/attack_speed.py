"""Attack speed, measured side by side in one run: our PGD against torchattacks' PGD, and PGD's cost.

    python benchmarks/attack_speed.py [--quick] [--json | --markdown] [--threads N] [--repeats R]

Targets (issue text): our PGD throughput (samples x steps per second) on the same model and batch
>= 1.3x torchattacks' PGD; time of a K-step attack <= 1.1 x K x (one forward+backward of the encoder).

Every timing is the median of R repeats, run interleaved (each repeat runs every variant once, in a
rotated order), so that load from other processes hits all variants alike. What each row means is
in benchmarks/README.md. torchattacks (installed with --no-deps, see the README) is imported here only.
"""

from __future__ import annotations

import os

from bindguard._openmp import choose_wait_policy  # bindguard's top level loads no torch

# Before torch loads OpenMP: spinning threads on idle cores, sleeping ones where other processes
# run (see the README's "Threads"); export OMP_WAIT_POLICY to choose yourself.
WAIT_POLICY = choose_wait_policy()

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.attacks.pgd import PGD
from bindguard.data import load_dataset
from bindguard.data.builtin.benchmark import TEMPLATES
from bindguard.encoders import Encoder, create_encoder
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.encoders.efficientnet_lite import LITE_MEAN, LITE_STD, load_pretrained_lite0
from bindguard.encoders.fusion import fold_batch_norms, optimize_frozen, to_channels_last
from bindguard.encoders.vision_trunk import VisionTrunk
from bindguard.evaluation.robust import RobustSettings
from bindguard.objectives import LogitCE, Objective, ObjectiveContext, ZeroShotCE

STEPS = 10
CLASSIFIER_SIDE = 64
COST_MODALITIES = tuple(modality for modality in Modality if modality is not Modality.TEXT)  # all seven
THROUGHPUT_TARGET = 1.3
COST_TARGET = 1.1
ATTACK_BATCH = RobustSettings().batch_size  # what `bindguard eval` attacks at once


# --- timing ------------------------------------------------------------------------------------


class Warm:
    """A runner whose timed call follows one untimed call, as each PGD step follows the step before.

    Without it, a lone forward+backward timed right after another model's runs pays for cold caches
    that the steps of an attack do not (measured: about 4% on EfficientNet-Lite0, batch 32).
    """

    def __init__(self, run: Callable[[], object]):
        self.run = run

    def __call__(self) -> object:
        return self.run()


def interleaved(
    runners: dict[str, Callable[[], object]], repeats: int, warmups: list[Callable[[], object]]
) -> tuple[dict[str, float], dict[str, float], dict[str, object]]:
    """Median wall and process CPU seconds of each runner over ``repeats`` rounds, and its first output.

    The ``warmups`` run first, untimed (oneDNN builds its kernels on first use of a shape). Each
    round runs every runner once, starting one further along the list than the round before; a
    ``Warm`` runner is called once untimed just before its timed call. CPU seconds are steadier
    than wall time on a loaded machine with 1 thread; with 2 threads they include OpenMP's spinning.
    """
    for warmup in warmups:
        warmup()
    names = list(runners)
    outputs: dict[str, object] = {}
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            if isinstance(runners[name], Warm):
                runners[name]()
            start, start_cpu = time.perf_counter(), time.process_time()
            output = runners[name]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            outputs.setdefault(name, output)
    median = statistics.median
    return {n: median(v) for n, v in times.items()}, {n: median(v) for n, v in cpu.items()}, outputs


# --- models and data ---------------------------------------------------------------------------


class LogitModule(nn.Module):
    """What torchattacks attacks: raw [0, 1] input -> class logits, the same function our PGD sees.

    Plain classifier: the logits. Zero-shot: 100 * <normalize(embedding), centers>, the logits of
    ZeroShotCE. Input validation is skipped (``encode_unvalidated``), as our attack loop skips it.
    """

    def __init__(self, encoder: Encoder, modality: Modality, centers: torch.Tensor | None = None):
        super().__init__()
        self.encoder, self.modality, self.centers = encoder, modality, centers
        # torchattacks calls model.train() after an attack on a model it found in training mode, and a
        # new Module starts in training mode: that would leave the encoder's BatchNorms training.
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.centers is None:
            return self.encoder.encode_modality(self.modality, x, normalize=False, validate=False)
        return 100.0 * self.encoder.encode_modality(self.modality, x, normalize=True, validate=False) @ self.centers.T


def natural_crops(count: int, side: int) -> tuple[torch.Tensor, str]:
    """(count, 3, side, side) crops of scikit-image's sample photos (dev extra), else upscaled digits."""
    try:
        from skimage import data as samples

        photos = [samples.astronaut(), samples.chelsea(), samples.coffee(), samples.rocket()]
    except Exception:  # scikit-image missing or its data unreadable
        images = load_dataset("builtin", split="test", modalities=[Modality.IMAGE], limit=count)
        pixels = images.data[Modality.IMAGE].inputs
        return F.interpolate(pixels, size=(side, side), mode="bilinear").clamp(0, 1), "built-in digit images"
    generator = torch.Generator().manual_seed(0)
    crops = []
    for index in range(count):
        photo = torch.from_numpy(photos[index % len(photos)]).permute(2, 0, 1).float() / 255
        height, width = photo.shape[1:]
        size = int(torch.randint(min(height, width) // 3, min(height, width) + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        crop = photo[None, :, top : top + size, left : left + size]
        crops.append(F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True))
    return torch.cat(crops).clamp(0, 1), "crops of scikit-image sample photos"


@dataclass
class Setup:
    key: str  # what --only names it by
    name: str
    encoder: Encoder
    fast: Encoder  # optimize_frozen(encoder): BN folded + channels-last conv weights
    modality: Modality
    x: torch.Tensor
    context: ObjectiveContext
    objective: Objective
    note: str = ""


def build(
    batch: int, cost_batch: int, stream_samples: int = 0
) -> tuple[list[Setup], list[Setup], list[Setup], dict[str, float]]:
    """The setups beside torchattacks (those on [0, 1] inputs; ``batch``), the cost setups (all;
    ``cost_batch``) and the setups beside torchattacks over ``stream_samples`` (continuous batching)."""
    one_time: dict[str, float] = {}
    lite = load_pretrained_lite0().requires_grad_(False)
    classifier = ClassifierEncoder(
        lite, height=CLASSIFIER_SIDE, width=CLASSIFIER_SIDE, classes=1000, mean=LITE_MEAN, std=LITE_STD
    ).eval()
    start = time.perf_counter()
    classifier_fast = optimize_frozen(classifier)
    one_time["optimize_frozen(classifier) s"] = time.perf_counter() - start
    size = max(batch, cost_batch, stream_samples)
    images, source = natural_crops(size, CLASSIFIER_SIDE)
    with torch.no_grad():  # labels: the classifier's own clean predictions (clean accuracy 100%)
        labels = classifier.encode_modality(Modality.IMAGE, images, normalize=False, validate=False).argmax(1)
    full = {
        "classifier": Setup(
            "classifier",
            "EfficientNet-Lite0 classifier (64 px, ImageNet logits, LogitCE)",
            classifier,
            classifier_fast,
            Modality.IMAGE,
            images,
            ObjectiveContext(labels=labels),
            LogitCE(),
            note=f"{source}; labels = its clean predictions",
        )
    }
    tinybind = create_encoder("tinybind")
    # create_tinybind ships its trunk already optimized; the baseline is the trunk the checkpoint defines
    tinybind.trunk = VisionTrunk(load_pretrained_lite0()).requires_grad_(False).eval()
    start = time.perf_counter()
    tinybind_fast = _rewritten(tinybind, optimize_frozen)
    one_time["optimize_frozen(tinybind) s"] = time.perf_counter() - start
    benchmark = load_dataset("builtin", split="test", modalities=list(COST_MODALITIES), limit=size)
    for modality in COST_MODALITIES:
        data = benchmark.data[modality]
        centers = semantic_centers(tinybind, benchmark.class_names, TEMPLATES[modality])
        full[modality.value] = Setup(
            modality.value,
            f"TinyBind {modality.value} zero-shot (ZeroShotCE)",
            tinybind,
            tinybind_fast,
            modality,
            data.inputs,
            ObjectiveContext(labels=data.labels, centers=centers),
            ZeroShotCE(),
            note="built-in test split, true labels",
        )
    # torchattacks clamps to [0, 1]: it attacks the same function only where that is the domain
    attacked = [_first(setup, batch) for setup in full.values() if _unit_domain(setup)]
    streamed = (
        [_first(setup, stream_samples) for setup in full.values() if _unit_domain(setup)] if stream_samples else []
    )
    return attacked, [_first(setup, cost_batch) for setup in full.values()], streamed, one_time


def _unit_domain(setup: Setup) -> bool:
    return tuple(setup.encoder.input_spec(setup.modality).domain) == (0.0, 1.0)


def _first(setup: Setup, n: int) -> Setup:
    """The setup restricted to its first ``n`` samples."""
    context = setup.context.subset(torch.arange(n))
    return Setup(
        setup.key,
        setup.name,
        setup.encoder,
        setup.fast,
        setup.modality,
        setup.x[:n].clone(),
        context,
        setup.objective,
        setup.note,
    )


# --- measurements ------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    model: str
    eps: str
    variant: str
    seconds: float
    throughput: float  # samples x nominal steps per second
    ratio: float | None  # throughput / torchattacks' throughput on the original encoder (attack rows)
    robust_accuracy: float
    extra: dict = field(default_factory=dict)


def robust_accuracy(setup: Setup, adversarial: torch.Tensor) -> float:
    """Top-1 accuracy at ``adversarial``, judged by the original encoder (never by the fast copy)."""
    with torch.no_grad():
        embedding = setup.encoder.encode_modality(
            setup.modality, adversarial, normalize=setup.objective.unit_norm, validate=False
        )
        return 1.0 - float(setup.objective.success(embedding, setup.context).float().mean())


def compare_with_torchattacks(setup: Setup, eps: str, repeats: int, *, reference_fast: bool) -> list[Row]:
    import torchattacks  # only the benchmark needs it

    threat = ThreatModel.linf(eps)
    alpha = threat.eps / 4  # our default for 10 steps: max(2.5 eps / steps, eps / 4)
    centers = None if isinstance(setup.objective, LogitCE) else setup.context.centers
    labels = setup.context.labels

    def reference(encoder: Encoder) -> Callable[[], torch.Tensor]:
        attack = torchattacks.PGD(
            LogitModule(encoder, setup.modality, centers), eps=threat.eps, alpha=alpha, steps=STEPS, random_start=True
        )

        def run() -> torch.Tensor:
            torch.manual_seed(0)  # its random start draws from the global generator
            return attack(setup.x, labels)

        return run

    def ours(encoder: Encoder, early_stop: bool) -> Callable[[], torch.Tensor]:
        attack = PGD(
            threat,
            objective=setup.objective,
            steps=STEPS,
            step_size=threat.eps / 4,
            random_start=True,
            early_stop=early_stop,
        )
        return lambda: attack.run(encoder, setup.modality, setup.x, setup.context).adversarial

    runners = {
        "torchattacks PGD": reference(setup.encoder),
        "ours, early_stop=False": ours(setup.encoder, False),
        "ours, early_stop=True": ours(setup.encoder, True),
        "ours, early_stop=False, fast encoder": ours(setup.fast, False),
        "ours, early_stop=True, fast encoder": ours(setup.fast, True),
    }
    if reference_fast:
        runners["torchattacks PGD, fast encoder"] = reference(setup.fast)
    warmups = [forward_backward(setup.encoder, setup), forward_backward(setup.fast, setup)]
    seconds, cpu, outputs = interleaved(runners, repeats, warmups)
    if any(m.training for m in setup.encoder.modules()) or any(m.training for m in setup.fast.modules()):
        raise RuntimeError("an attack left the encoder in training mode")
    extra = {name: {"cpu s": cpu[name], "cpu ratio": cpu["torchattacks PGD"] / cpu[name]} for name in seconds}
    return ratio_rows("attack", setup, eps, seconds, outputs, "torchattacks PGD", extra)


def ratio_rows(
    section: str,
    setup: Setup,
    eps: str,
    seconds: dict[str, float],
    outputs: dict[str, object],
    reference: str,
    extra: dict[str, dict],
) -> list[Row]:
    """One row per variant: nominal throughput (samples x steps / s), its ratio to ``reference``'s, robust accuracy."""
    work = setup.x.shape[0] * STEPS
    return [
        Row(
            section,
            setup.name,
            eps,
            name,
            value,
            work / value,
            seconds[reference] / value,
            robust_accuracy(setup, outputs[name]),
            extra[name],
        )
        for name, value in seconds.items()
    ]


def compare_over_samples(setup: Setup, eps: str, repeats: int, batch: int) -> list[Row]:
    """PGD over more samples than one batch holds, ``batch`` at a time: torchattacks and ours batch by
    batch (as a user's loop, or ``bindguard eval``, runs them), and ours with continuous batching
    (``PGD(batch_size=batch)``: a fooled sample's row goes to the next sample at once)."""
    import torchattacks  # only the benchmark needs it

    threat = ThreatModel.linf(eps)
    centers = None if isinstance(setup.objective, LogitCE) else setup.context.centers
    labels = setup.context.labels
    chunks = [torch.arange(start, min(start + batch, setup.x.shape[0])) for start in range(0, setup.x.shape[0], batch)]
    reference = torchattacks.PGD(
        LogitModule(setup.encoder, setup.modality, centers), eps=threat.eps, alpha=threat.eps / 4, steps=STEPS
    )
    options = {"objective": setup.objective, "steps": STEPS, "step_size": threat.eps / 4, "random_start": True}
    per_batch = PGD(threat, early_stop=True, **options)
    streaming = PGD(threat, early_stop=True, batch_size=batch, **options)

    def torchattacks_batches() -> torch.Tensor:
        torch.manual_seed(0)  # its random start draws from the global generator
        return torch.cat([reference(setup.x[chunk], labels[chunk]) for chunk in chunks])

    def ours_batches() -> torch.Tensor:
        return torch.cat(
            [
                per_batch.run(setup.encoder, setup.modality, setup.x[chunk], setup.context.subset(chunk)).adversarial
                for chunk in chunks
            ]
        )

    runners = {
        "torchattacks PGD, batch by batch": torchattacks_batches,
        "ours, early_stop=True, batch by batch": ours_batches,
        "ours, continuous batching": lambda: (
            streaming.run(setup.encoder, setup.modality, setup.x, setup.context).adversarial
        ),
    }
    seconds, cpu, outputs = interleaved(runners, repeats, [forward_backward(setup.encoder, _first(setup, batch))])
    extra = {name: {"samples": setup.x.shape[0], "batch": batch, "cpu s": cpu[name]} for name in seconds}
    return ratio_rows("stream", setup, eps, seconds, outputs, "torchattacks PGD, batch by batch", extra)


def forward_backward(encoder: Encoder, setup: Setup) -> Callable[[], torch.Tensor]:
    """One forward+backward of ``encoder`` on the batch: embedding, objective, gradient to the raw input."""

    def run() -> torch.Tensor:
        x = setup.x.detach().requires_grad_(True)
        with torch.enable_grad():
            embedding = encoder.encode_modality(setup.modality, x, normalize=setup.objective.unit_norm, validate=False)
            (gradient,) = torch.autograd.grad(setup.objective.loss(embedding, setup.context).sum(), x)
        return gradient

    return run


def forward_only(encoder: Encoder, setup: Setup) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return encoder.encode_modality(setup.modality, setup.x, normalize=setup.objective.unit_norm, validate=False)

    return run


def cost(setup: Setup, repeats: int, eps: str = "4/255") -> Row:
    """PGD time / (K x forward+backward), plain and on the fast encoder, and what folding buys."""
    folded = _rewritten(setup.encoder, fold_batch_norms)
    nhwc = _rewritten(setup.encoder, to_channels_last)
    attack = PGD(ThreatModel.linf(eps), objective=setup.objective, steps=STEPS, early_stop=False)
    runners = {
        "fwd+bwd": Warm(forward_backward(setup.encoder, setup)),
        "fwd+bwd fold BN": Warm(forward_backward(folded, setup)),
        "fwd+bwd channels-last": Warm(forward_backward(nhwc, setup)),
        "fwd+bwd fold BN + channels-last": Warm(forward_backward(setup.fast, setup)),
        "fwd": Warm(forward_only(setup.encoder, setup)),
        "fwd fast": Warm(forward_only(setup.fast, setup)),
        "PGD": lambda: attack.run(setup.encoder, setup.modality, setup.x, setup.context).adversarial,
        "PGD fast": lambda: attack.run(setup.fast, setup.modality, setup.x, setup.context).adversarial,
    }
    warmups = [runners["fwd+bwd"], runners["fwd+bwd fold BN + channels-last"]]
    seconds, cpu, outputs = interleaved(runners, repeats, warmups)
    fb, fb_fast = seconds["fwd+bwd"], seconds["fwd+bwd fold BN + channels-last"]
    extra = {f"{name} ms": 1000 * value for name, value in seconds.items()}
    extra |= {f"{name} cpu ms": 1000 * value for name, value in cpu.items()}
    extra["cost ratio cpu"] = cpu["PGD"] / (STEPS * cpu["fwd+bwd"])
    extra["fold BN + channels-last speedup cpu"] = cpu["fwd+bwd"] / cpu["fwd+bwd fold BN + channels-last"]
    extra |= {
        "batch": setup.x.shape[0],
        "cost ratio": seconds["PGD"] / (STEPS * fb),
        "cost ratio fast (vs its own fwd+bwd)": seconds["PGD fast"] / (STEPS * fb_fast),
        "fold BN speedup": fb / seconds["fwd+bwd fold BN"],
        "channels-last speedup": fb / seconds["fwd+bwd channels-last"],
        "fold BN + channels-last speedup": fb / fb_fast,
        "PGD fast speedup": seconds["PGD"] / seconds["PGD fast"],
        "robust accuracy fast": robust_accuracy(setup, outputs["PGD fast"]),
    }
    work = setup.x.shape[0] * STEPS
    return Row(
        "cost",
        setup.name,
        eps,
        "ours, early_stop=False",
        seconds["PGD"],
        work / seconds["PGD"],
        None,
        robust_accuracy(setup, outputs["PGD"]),
        extra,
    )


def _rewritten(encoder: Encoder, rewrite: Callable[[nn.Module], nn.Module]) -> Encoder:
    """``rewrite(encoder)``, a copy; TinyBind's text tower, if loaded, is shared rather than copied."""
    return rewrite(encoder) if not hasattr(encoder, "_text") else _sharing_text(encoder, rewrite)


def _sharing_text(encoder: Encoder, rewrite: Callable[[nn.Module], nn.Module]) -> Encoder:
    text, encoder._text = encoder._text, None  # the text tower is not attacked: leave it out of the copy
    try:
        result = rewrite(encoder)
    finally:
        encoder._text = text
    result._text = text
    return result


# --- report ------------------------------------------------------------------------------------


def summary(rows: list[Row]) -> dict[str, object]:
    attack = [row for row in rows if row.section == "attack"]
    costs = [row for row in rows if row.section == "cost"]

    def best(variant: str) -> float | None:
        return min((row.ratio for row in attack if row.variant == variant), default=None)

    return {
        "throughput target": f">= {THROUGHPUT_TARGET}x torchattacks",
        "worst ratio, ours early_stop=False": best("ours, early_stop=False"),
        "worst ratio, ours early_stop=True": best("ours, early_stop=True"),
        "worst ratio, ours early_stop=False, fast encoder": best("ours, early_stop=False, fast encoder"),
        "worst ratio, ours early_stop=True, fast encoder": best("ours, early_stop=True, fast encoder"),
        "worst ratio, ours continuous batching": min(
            (row.ratio for row in rows if row.section == "stream" and row.variant == "ours, continuous batching"),
            default=None,
        ),
        "cost target": f"<= {COST_TARGET}" if costs else None,
        "worst cost ratio": max((row.extra["cost ratio"] for row in costs), default=None),
        "worst cost ratio, fast encoder": max(
            (row.extra["cost ratio fast (vs its own fwd+bwd)"] for row in costs), default=None
        ),
    }


SHORT_VARIANTS = {
    "torchattacks PGD": "torchattacks",
    "ours, early_stop=False": "ours, early_stop=False",
    "ours, early_stop=True": "ours, early_stop=True",
    "ours, early_stop=False, fast encoder": "ours, early_stop=False, fast",
    "ours, early_stop=True, fast encoder": "ours, early_stop=True, fast",
    "torchattacks PGD, fast encoder": "torchattacks, fast",
    "torchattacks PGD, batch by batch": "torchattacks, batch by batch",
    "ours, early_stop=True, batch by batch": "ours, early_stop=True, batch by batch",
    "ours, continuous batching": "ours, continuous batching",
}


def attack_table(rows: list[Row], section: str = "attack") -> tuple[list[str], list[list[str]]]:
    header = ["model", "Linf eps", "PGD (10 steps)", "time s", "samples x steps / s", "ratio", "robust acc"]
    body = [
        [
            row.model.split(" (")[0],
            row.eps,
            SHORT_VARIANTS[row.variant],
            f"{row.seconds:.2f}",
            f"{row.throughput:.0f}",
            f"{row.ratio:.2f}x",
            f"{100 * row.robust_accuracy:.1f}%",
        ]
        for row in rows
        if row.section == section
    ]
    return header, body


def stream_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    return attack_table(rows, "stream")


def cost_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    header = [
        "encoder",
        "batch",
        "fwd+bwd ms",
        "fwd ms",
        "PGD ms",
        "cost ratio",
        "fold BN",
        "channels-last",
        "fold BN + CL",
        "PGD fast ms",
        "cost ratio fast",
        "PGD fast speedup",
    ]
    body = []
    for row in rows:
        if row.section != "cost":
            continue
        e = row.extra
        body.append(
            [
                row.model.split(" (")[0].replace(" zero-shot", ""),
                str(e["batch"]),
                f"{e['fwd+bwd ms']:.0f}",
                f"{e['fwd ms']:.0f}",
                f"{e['PGD ms']:.0f}",
                f"{e['cost ratio']:.3f}",
                f"{e['fold BN speedup']:.2f}x",
                f"{e['channels-last speedup']:.2f}x",
                f"{e['fold BN + channels-last speedup']:.2f}x",
                f"{e['PGD fast ms']:.0f}",
                f"{e['cost ratio fast (vs its own fwd+bwd)']:.3f}",
                f"{e['PGD fast speedup']:.2f}x",
            ]
        )
    return header, body


def headline(settings: dict) -> str:
    return (
        f"torch {settings['torch']}, {settings['threads']} threads on {settings['cpus']} CPUs, "
        f"medians of {settings['repeats']} interleaved repeats, batch {settings['batch']} "
        f"(cost rows {settings['cost batch']}), PGD {STEPS} steps; load average "
        f"{settings['load before']} -> {settings['load after']}; wall {settings['wall s']} s"
    )


def footer(settings: dict, verdict: dict) -> list[str]:
    lines = [
        "fold BN / channels-last / fold BN + CL: forward+backward speedup of that rewrite alone "
        "(fold BN + CL = optimize_frozen = the 'fast' encoder); one-time cost: "
        + ", ".join(f"{k} {v:.2f}" for k, v in settings["one-time"].items())
    ]
    lines += [f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in verdict.items() if v is not None]
    return lines


ATTACK_TITLE = "(a, b) PGD throughput on the same model and batch; ratio = throughput / torchattacks' PGD"
STREAM_TITLE = (
    "(d) PGD over more samples than a batch, batch by batch or with continuous batching; "
    "ratio = throughput / torchattacks' batch by batch"
)
COST_TITLE = f"(c) cost ratio = time of a {STEPS}-step PGD (early_stop=False) / ({STEPS} x one forward+backward)"


def _text_columns(header: list[str]) -> int:
    return 3 if header[0] == "model" else 1


def _tables(rows: list[Row]) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    tables = [(ATTACK_TITLE, attack_table(rows)), (STREAM_TITLE, stream_table(rows)), (COST_TITLE, cost_table(rows))]
    return [(title, (header, body)) for title, (header, body) in tables if body]


def print_rich(rows: list[Row], settings: dict, verdict: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 170)
    console.print(headline(settings))
    for title, (header, body) in _tables(rows):
        table = Table(title=title)
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index < _text_columns(header) else "right")
        for line in body:
            table.add_row(*line)
        console.print(table)
    for line in footer(settings, verdict):
        console.print(line, highlight=False)


def print_markdown(rows: list[Row], settings: dict, verdict: dict) -> None:
    print(headline(settings) + "\n")
    for title, (header, body) in _tables(rows):
        print(f"{title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < _text_columns(header) else "---:" for i in range(len(header))) + "|")
        for line in body:
            print("| " + " | ".join(line) + " |")
        print()
    for line in footer(settings, verdict):
        print(f"- {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 repeats, cost batches of 8, no torchattacks-on-fast-encoder row (about 3 min on 2 idle cores)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of tables")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables (for the README)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, help="timed rounds per measurement (default 5, quick 3)")
    parser.add_argument("--batch", type=int, default=32, help="batch of the torchattacks comparison (default 32)")
    parser.add_argument(
        "--cost-batch",
        type=int,
        help=f"batch of the cost rows (default: the batch robust evaluation attacks, {ATTACK_BATCH}; quick 8)",
    )
    parser.add_argument(
        "--sections",
        default="attack,stream,cost",
        help="which tables to measure, comma-separated: attack (a, b), stream (d), cost (c)",
    )
    parser.add_argument(
        "--stream-samples", type=int, help="samples of the stream rows, attacked --batch at a time (default 4 batches)"
    )
    parser.add_argument("--render", metavar="JSON", help="print the tables of a saved --json run instead of measuring")
    parser.add_argument(
        "--only", metavar="NAMES", help="measure only these setups, comma-separated (classifier, image, audio, ...)"
    )
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            saved = json.load(handle)
        rows = [Row(**row) for row in saved["rows"]]
        (print_markdown if args.markdown else print_rich)(rows, saved["settings"], saved["summary"])
        return 0
    repeats = args.repeats or (3 if args.quick else 5)
    cost_batch = args.cost_batch or (8 if args.quick else ATTACK_BATCH)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    started = time.perf_counter()
    sections = set(args.sections.split(","))
    stream_samples = (args.stream_samples or 4 * args.batch) if "stream" in sections else 0
    attacked, cost_setups, streamed, one_time = build(args.batch, cost_batch, stream_samples)
    attacked, cost_setups = (attacked if "attack" in sections else []), (cost_setups if "cost" in sections else [])
    if args.only:
        chosen = set(args.only.split(","))
        attacked, cost_setups, streamed = (
            [setup for setup in setups if setup.key in chosen] for setups in (attacked, cost_setups, streamed)
        )
    rows: list[Row] = []
    for setup in streamed:
        for eps in ("4/255", "1/255"):
            rows += compare_over_samples(setup, eps, repeats, args.batch)
            print(f"done: {setup.name}, {stream_samples} samples, eps {eps}", file=sys.stderr, flush=True)
    for setup in attacked:
        for eps in ("4/255", "1/255"):
            # the torchattacks-on-the-fast-copy rows, which show the encoder's gain, for the two first setups
            reference_fast = not args.quick and setup.key in ("classifier", "image")
            rows += compare_with_torchattacks(setup, eps, repeats, reference_fast=reference_fast)
            print(f"done: {setup.name}, eps {eps}", file=sys.stderr, flush=True)
    for setup in cost_setups:
        rows.append(cost(setup, repeats))
        print(f"done: cost {setup.name}", file=sys.stderr, flush=True)
    settings = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": WAIT_POLICY,
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "batch": args.batch,
        "cost batch": cost_batch,
        "steps": STEPS,
        "stream samples": stream_samples,
        "sections": sorted(sections),
        "quick": args.quick,
        "load before": load_before,
        "load after": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "wall s": round(time.perf_counter() - started, 1),
        "one-time": one_time,
        "data": {setup.name: setup.note for setup in attacked},
    }
    verdict = summary(rows)
    if args.json:
        print(json.dumps({"settings": settings, "summary": verdict, "rows": [asdict(r) for r in rows]}, indent=2))
    elif args.markdown:
        print_markdown(rows, settings, verdict)
    else:
        print_rich(rows, settings, verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
