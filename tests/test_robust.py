"""Robust evaluation: worst case over the ensemble, resumable state, rows, sanity flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bindguard._types import Modality
from bindguard.attacks import ThreatModel
from bindguard.data import load_dataset
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.errors import ConfigError, UnknownNameError
from bindguard.evaluation import robust as robust_module
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE, parse_ensemble
from bindguard.evaluation.flags import SanityChecker
from bindguard.evaluation.robust import RobustSettings, evaluate_robust

QUICK = RobustSettings(ensemble=parse_ensemble("pgd,rank"), steps=3, square_queries=0, checks=False, batch_size=8)


@pytest.fixture(scope="module")
def small_benchmark():
    return load_dataset("builtin", split="test", modalities=[Modality.IMAGE, Modality.POINT], limit=8)


def test_rows_report_attack_budget_and_are_below_clean(tinybind, small_benchmark) -> None:
    threats = [ThreatModel.linf("4/255"), ThreatModel.linf("1/255")]
    rows = evaluate_robust(tinybind, small_benchmark, threats, settings=QUICK)
    assert [(r["modality"], r["eps"]) for r in rows] == [
        ("image", 1 / 255),
        ("image", 4 / 255),
        ("point", 1 / 255),
        ("point", 4 / 255),
    ]
    for row in rows:
        assert row["task"] == "zero-shot" and row["adaptive"] is True and row["attack"] == "pgd,rank"
        assert row["norm"] == "linf" and row["steps"] == 3 and row["n"] == 8
        spec = tinybind.input_spec(row["modality"])
        assert row["eps_abs"] == pytest.approx(row["eps"] * spec.range)
        assert row["top1"] <= row["clean_top1"] and row["top5"] <= row["clean_top5"] and row["top1"] <= row["top5"]
        assert row["max_norm"] <= row["eps_abs"] * (1 + 1e-5)
        assert list(row["after"]) == ["pgd", "rank"]
        assert row["top1_ci95"][0] <= row["top1"] <= row["top1_ci95"][1]


def test_interrupted_run_resumes_without_redoing_attacks(
    tinybind, small_benchmark, tmp_path: Path, monkeypatch
) -> None:
    def run(model: str) -> list[dict]:
        return evaluate_robust(
            tinybind,
            small_benchmark,
            [ThreatModel.linf("2/255")],
            modalities=[Modality.IMAGE],
            settings=QUICK,
            state_directory=tmp_path,
            run_config={"model": model},
        )

    first = run("tinybind")
    assert list(tmp_path.glob("image-linf-*.json"))
    calls = []
    original = robust_module._attack_in_batches
    monkeypatch.setattr(robust_module, "_attack_in_batches", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = run("tinybind")
    assert calls == [] and again[0]["top1"] == first[0]["top1"]
    # a different configuration never reuses the saved state
    run("other")
    assert calls


def test_standard_ensemble_and_bad_names() -> None:
    assert STANDARD_ENSEMBLE.attack_names == ["apgd-ce", "apgd-t", "rank", "embed"]
    assert parse_ensemble("standard") is STANDARD_ENSEMBLE
    assert parse_ensemble("pgd,pgd,fgsm").attack_names == ["pgd", "fgsm"]
    with pytest.raises(UnknownNameError, match="known: standard"):
        parse_ensemble("pgd,autoattack")
    with pytest.raises(ConfigError, match="target embeddings"):
        parse_ensemble("cross-modal")


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.linear(x.flatten(1)) + 0.5 * torch.randn(x.shape[0], 4)


class _Staircase(nn.Module):
    """Rounds its input: gradients are zero everywhere, the textbook masked model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.linear(torch.round(x * 4).flatten(1) / 4)


def _checker(model: nn.Module) -> SanityChecker:
    torch.manual_seed(0)
    encoder = ClassifierEncoder(model, height=8, width=8, classes=4).eval()
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        labels = model(x).argmax(1)
    settings = RobustSettings(steps=3, square_queries=0, check_samples=16)
    return SanityChecker(encoder, Modality.IMAGE, x, labels, torch.eye(4), settings)


def test_flags_catch_randomness_and_masked_gradients() -> None:
    noisy = _checker(_Noisy())
    assert "non-deterministic" in noisy._modality_flags()
    masked = _checker(_Staircase())
    flags = masked._modality_flags()
    assert "zero-gradients" in flags and "large-eps-not-zero" in flags
    healthy = _checker(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)))
    assert healthy._modality_flags() == []


def test_sweep_flags_accuracy_rising_with_eps() -> None:
    values = [(1, 0.5, 0.9), (2, 0.6, 0.9), (4, 0.1, 0.5), (8, 0.1, 0.7)]
    rows = [{"norm": "linf", "eps": e, "top1": t1, "top5": t5, "n": 100, "flags": []} for e, t1, t5 in values]
    SanityChecker.check_sweep(rows)
    assert [row["flags"] for row in rows] == [[], ["rises-with-eps"], [], ["rises-with-eps"]]


def test_cli_robust_sweep(tmp_path: Path) -> None:
    from bindguard.cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--modalities",
            "image,audio",
            "--n",
            "6",
            "--attacks",
            "pgd",
            "--steps",
            "2",
            "--eps",
            "1/255,4/255",
            "--square-queries",
            "0",
            "--no-checks",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    robust = [row for row in rows if row["attack"] == "pgd"]
    assert len(robust) == 4
    for row in robust:
        assert {"attack", "norm", "eps", "eps_abs", "steps", "adaptive", "flags", "top1", "top5", "n"} <= set(row)
    assert robust[2]["modality"] == "audio" and robust[2]["eps_abs"] == pytest.approx(2 / 255)
