"""The demo: the main job on the embedded default, TinyBind on the built-in benchmark, all seven modalities.

Clean evaluation, the standard ensemble at 1/255, 2/255 and 4/255 (Linf), example perturbations,
the calibration that ships with TinyBind (``calibration="shipped"``) measured before and after
(clean, transfer, adaptive), then the report. ``quick`` also trains a short calibration to show the
training loop (labelled as such, kept out of the report). Every stage resumes from ``out`` when rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bindguard._types import PERCEPTUAL_MODALITIES
from bindguard.attacks import ThreatModel, create_attack
from bindguard.data import load_dataset
from bindguard.encoders import create_encoder
from bindguard.encoders.calibrated import SHIPPED, CalibratedEncoder
from bindguard.evaluation.examples import attack_examples, write_examples
from bindguard.evaluation.results import Results
from bindguard.pipeline.calibrate_job import calibrate, evaluate_calibration
from bindguard.pipeline.evaluate_job import evaluate
from bindguard.pipeline.setup import check_out
from bindguard.training.recipe import CalibrationRecipe

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoPlan:
    """The demo's sizes: small enough for minutes on a laptop CPU, and written into every row."""

    samples: int
    steps: int
    square_queries: int
    check_samples: int
    example_steps: int
    calibration_epochs: int
    calibration_samples: int

    @classmethod
    def of(cls, *, quick: bool) -> DemoPlan:
        if quick:
            return cls(16, 5, 20, 4, 5, 1, 64)
        return cls(60, 10, 100, 8, 20, 2, 384)


@dataclass(frozen=True)
class DemoOutcome:
    results: Results  # evaluation and calibration rows together (``out/results.json``)
    calibration: Results  # the shipped calibration's own results (``out/calibration/results.json``)
    report: Path
    plan: DemoPlan
    training_loop: Results | None = None  # quick only: the short calibration (``out/training-loop``)


def run_demo(out: str | Path, *, quick: bool = False, progress: Progress | None = None) -> DemoOutcome:
    """Run the demo into ``out`` (``report.html``, ``results.json``, ``examples/``, ``calibration/``)."""
    from bindguard.reports import build_report

    out = check_out(out)
    plan = DemoPlan.of(quick=quick)
    results = evaluate(
        "tinybind",
        "builtin",
        attacks="standard",
        eps="1/255,2/255,4/255",
        n=plan.samples,
        steps=plan.steps,
        square_queries=plan.square_queries,
        check_samples=plan.check_samples,
        batch_size=64,
        device="cpu",
        out=out,
        progress=progress,
    )
    save_examples(out / "examples", steps=plan.example_steps)

    def measure(calibrated: CalibratedEncoder, folder: Path) -> Results:
        return evaluate_calibration(
            calibrated,
            "builtin",
            n=plan.samples,
            steps=plan.steps,
            square_queries=plan.square_queries,
            check_samples=plan.check_samples,
            out=folder,
            progress=progress,
        )

    calibration = measure(create_encoder("tinybind", calibration=SHIPPED, device="cpu"), out / "calibration")
    training_loop = None
    if quick:  # the training loop, run short: it shows the steps, not what a full recipe reaches
        trained = calibrate(
            "tinybind",
            "builtin",
            recipe=CalibrationRecipe(name="demo-short", epochs=plan.calibration_epochs),
            limit=plan.calibration_samples,
            out=out / "training-loop",
            device="cpu",
            progress=progress,
        )
        training_loop = measure(trained, out / "training-loop")
    results.rows += calibration.rows
    results.settings["calibration"] = calibration.settings
    results.write(out)
    report = build_report(out, progress=progress)
    return DemoOutcome(results, calibration, report, plan, training_loop)


def save_examples(directory: Path, *, steps: int) -> None:
    """A few APGD-CE examples per modality at 4/255 for the report's pictures."""
    encoder = create_encoder("tinybind")
    benchmark = load_dataset("builtin", split="test", limit=3)
    attack = create_attack("apgd-ce", threat=ThreatModel.linf("4/255"), steps=steps)
    for modality in PERCEPTUAL_MODALITIES:
        tensors, summary = attack_examples(encoder, benchmark, modality, attack)
        write_examples(directory, tensors, summary | {"model": "tinybind", "steps": attack.steps})
