"""The pareto benchmark's table says what its ladders showed, and it reads the time a rung's checkpoint carries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("calibration_benchmark", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant: str, robust: float, seconds: float, converged: bool = False) -> dict:
    row = {
        "variant": variant,
        "epochs": 1,
        "trainable_parameters": 10,
        "trainable_fraction": 0.01,
        "train_seconds": seconds,
        "after": {"clean_top1": 1.0, "robust_top1": robust, "robust_top5": 1.0},
        "front": False,
        "flags": [],
    }
    return row | ({"converged": True} if converged else {})


def _table(benchmark, rows: list[dict], capsys) -> str:
    benchmark._print_pareto(rows, "header")
    return capsys.readouterr().out


def test_a_one_rung_ladder_says_its_convergence_was_not_judged(benchmark, capsys):
    out = _table(benchmark, [_row("recipe r", 0.89, 10), _row("full fine-tune FARE, 512 ep", 0.84, 100)], capsys)
    assert "| full fine-tune FARE, 512 ep (one rung, convergence not judged) |" in out
    assert "84.0 in 100 s (one rung, convergence not judged)" in out
    assert "not converged" not in out


def test_a_ladder_that_ran_out_of_rungs_while_gaining_says_not_converged(benchmark, capsys):
    rows = [
        _row("recipe r", 0.9, 10),
        _row("full fine-tune FARE, 64 ep", 0.73, 50),
        _row("full fine-tune FARE, 128 ep", 0.8, 100),
    ]
    out = _table(benchmark, rows, capsys)
    assert "| full fine-tune FARE, 64 ep |" in out
    assert "| full fine-tune FARE, 128 ep (ladder ended, not converged) |" in out
    assert "80.0 in 100 s (not converged)" in out


def test_a_converged_ladder_says_converged_even_when_its_best_rung_is_earlier(benchmark, capsys):
    rows = [
        _row("recipe r", 0.9, 10),
        _row("full fine-tune FARE, 256 ep", 0.87, 50),
        _row("full fine-tune FARE, 512 ep", 0.84, 100, converged=True),
    ]
    out = _table(benchmark, rows, capsys)
    assert "| full fine-tune FARE, 512 ep (converged) |" in out
    assert "full fine-tune FARE, 256 ep, 87.0 in 50 s (converged)" in out


def test_checkpoint_seconds_reads_the_training_time_a_checkpoint_carries(benchmark, tmp_path):
    path = tmp_path / "rung.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"epoch": "441", "seconds": "8123.5"})
    assert benchmark._checkpoint_seconds(path) == 8123.5


@pytest.mark.parametrize("content", [None, b"not a safetensors file", "nan"])
def test_checkpoint_seconds_is_zero_without_a_readable_time(benchmark, tmp_path, content):
    path = tmp_path / "rung.safetensors"
    if content == "nan":
        save_file({"w": torch.zeros(1)}, str(path), metadata={"seconds": "nan"})
    elif content is not None:
        path.write_bytes(content)
    assert benchmark._checkpoint_seconds(path) == 0.0
    assert benchmark._checkpoint_seconds(None) == 0.0
