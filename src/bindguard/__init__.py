"""bindguard: find and repair the adversarial weak spots of unified multimodal encoders.

The main job in a few lines::

    import bindguard

    results = bindguard.evaluate("tinybind", "builtin", attacks="standard", eps=["4/255"], n=100)
    calibrated = bindguard.calibrate("tinybind", "builtin", out="runs/calibration")
    after = bindguard.evaluate_calibration(calibrated, "builtin", n=100, out="runs/calibration")

``import bindguard`` stays light: torch and the rest load on first use of these names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first access (PEP 562)
_LAZY = {
    "evaluate": "bindguard.pipeline",
    "estimate": "bindguard.pipeline",
    "prepare_data": "bindguard.pipeline",
    "calibrate": "bindguard.pipeline",
    "evaluate_calibration": "bindguard.pipeline",
    "run_demo": "bindguard.pipeline",
    "attack_samples": "bindguard.pipeline",
    "certify_samples": "bindguard.pipeline",
    "Results": "bindguard.evaluation.results",
    "CalibrationRecipe": "bindguard.training.recipe",
    "create_encoder": "bindguard.encoders",
    "list_encoders": "bindguard.encoders",
    "Encoder": "bindguard.encoders",
    "create_attack": "bindguard.attacks",
    "list_attacks": "bindguard.attacks",
    "ThreatModel": "bindguard.attacks",
    "load_dataset": "bindguard.data",
    "Modality": "bindguard._types",
}

# subpackages reachable as attributes after a bare ``import bindguard`` (``bindguard.reports.build_report``)
_SUBPACKAGES = (
    "attacks", "calibration", "data", "distributed", "encoders", "evaluation", "pipeline", "reports", "training",
)  # fmt: skip

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads the names
    from bindguard._types import Modality
    from bindguard.attacks import ThreatModel, create_attack, list_attacks
    from bindguard.data import load_dataset
    from bindguard.encoders import Encoder, create_encoder, list_encoders
    from bindguard.evaluation.results import Results
    from bindguard.pipeline import (
        attack_samples,
        calibrate,
        certify_samples,
        estimate,
        evaluate,
        evaluate_calibration,
        prepare_data,
        run_demo,
    )
    from bindguard.training.recipe import CalibrationRecipe


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"bindguard.{name}")
    raise AttributeError(f"module 'bindguard' has no attribute {name!r}")
