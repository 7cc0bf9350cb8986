"""The main jobs as library calls; the command line is a shell around these."""

from bindguard.pipeline.attack_job import AttackedSamples, attack_samples
from bindguard.pipeline.calibrate_job import calibrate, evaluate_calibration
from bindguard.pipeline.certify_job import certify_samples
from bindguard.pipeline.demo import DemoOutcome, DemoPlan, run_demo
from bindguard.pipeline.evaluate_job import estimate, evaluate
from bindguard.pipeline.prepare_job import PreparedData, prepare_data
from bindguard.pipeline.setup import resolve_device
from bindguard.training.recipe import CalibrationRecipe

__all__ = [
    "AttackedSamples",
    "CalibrationRecipe",
    "attack_samples",
    "certify_samples",
    "DemoOutcome",
    "DemoPlan",
    "calibrate",
    "estimate",
    "evaluate",
    "evaluate_calibration",
    "PreparedData",
    "prepare_data",
    "resolve_device",
    "run_demo",
]
