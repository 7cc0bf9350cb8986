"""Calibration modules (heads, low-rank adapters, purifiers) and their safetensors + JSON folders."""

from bindguard.calibration.module import PARTS, Calibration, CalibrationConfig, adaptable, parse_method
from bindguard.calibration.storage import read_calibrations, write_calibrations

__all__ = [
    "PARTS",
    "Calibration",
    "CalibrationConfig",
    "adaptable",
    "parse_method",
    "read_calibrations",
    "write_calibrations",
]
