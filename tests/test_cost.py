"""The warning before a run that would take hours: large encoders on the CPU are timed on one sample."""

from __future__ import annotations

import logging

import pytest
import torch

import bindguard
from bindguard._types import Modality
from bindguard.evaluation.ensemble import parse_ensemble
from bindguard.evaluation.robust import RobustSettings
from bindguard.pipeline import cost


def test_passes_count_every_gradient_step_and_square_queries_as_forward_passes() -> None:
    settings = RobustSettings(ensemble=parse_ensemble("standard"), steps=10, square_queries=300)
    # apgd-ce 10 + apgd-t 3 targets x 10 + rank 10 + embed 10 = 60 gradient passes; Square 300 / 3
    assert cost.passes_per_sample(settings, threats=2) == pytest.approx(2 * (60 + 100))


def test_small_encoders_are_not_timed(tinybind) -> None:
    assert cost.warn_if_slow(tinybind, [Modality.IMAGE], samples=100, passes=1000) is None


def test_a_run_predicted_to_take_hours_is_announced(
    tinybind, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert cost.time_one_pass(tinybind, Modality.IMAGE) > 0  # the real measurement runs
    monkeypatch.setattr(cost, "LARGE_MODEL_PARAMETERS", 0)  # treat TinyBind as a full-size encoder
    monkeypatch.setattr(cost, "time_one_pass", lambda encoder, modality: 30.0)  # ImageBind-huge on 2 cores
    with caplog.at_level(logging.WARNING):
        predicted = cost.warn_if_slow(tinybind, [Modality.IMAGE], samples=100, passes=600)
    assert predicted == pytest.approx(30.0 * 100 * 600)
    assert "about 500 hours on the CPU" in caplog.text and "--device cuda" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cost.warn_if_slow(tinybind, [Modality.IMAGE], samples=1, passes=10) == pytest.approx(300.0)
    assert "hours" not in caplog.text


def test_evaluate_warns_before_attacking(tinybind, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(cost, "LARGE_MODEL_PARAMETERS", 0)
    monkeypatch.setattr(cost, "WARN_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING):
        bindguard.evaluate(
            tinybind, "builtin", modalities="image", n=2, attacks="fgsm", eps=["4/255"], checks=False,
            square_queries=0, batch_size=2,
        )  # fmt: skip
    assert "this run would take about" in caplog.text


def test_an_estimate_counts_every_pass_of_the_run(tinybind, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "time_batch_pass", lambda encoder, modality, batch: 0.01)
    settings = RobustSettings(ensemble=parse_ensemble("standard"), steps=10, square_queries=300, check_samples=4)
    predicted = cost.estimate_cost(tinybind, {Modality.IMAGE: 20}, settings, threats=2, batch_size=8)
    (row,) = predicted.rows
    # least: APGD-CE's 10 steps per threat; most: every attack and Square on every sample (160 per threat)
    assert (row["passes_least"], row["passes_most"]) == (20, 320)
    assert row["check_passes"] == 4 * (1 + 10 + 2 * 3 * 10)
    clean = 20 * (2 + 1 + 2) / 3  # clean rows, clean scores, the checks' choice, one per threat
    assert predicted.least_seconds == pytest.approx(0.01 * (clean + 20 * 20 + row["check_passes"]))
    assert predicted.most_seconds == pytest.approx(0.01 * (clean + 20 * 320 + row["check_passes"]))
    halved = cost.estimate_cost(tinybind, {Modality.IMAGE: 20}, settings, threats=2, batch_size=8, processes=2)
    assert halved.most_seconds == pytest.approx(0.01 * ((clean + 20 * 320) / 2 + row["check_passes"]))


def test_a_pass_is_timed_per_sample_on_a_batch(tinybind) -> None:
    assert 0 < cost.time_batch_pass(tinybind, Modality.POINT, 4, repeats=1) < 1.0


def test_eval_estimate_prints_the_prediction_and_writes_nothing(tmp_path) -> None:
    from typer.testing import CliRunner

    from bindguard.cli.main import app

    out = tmp_path / "never"
    result = CliRunner().invoke(
        app,
        ["eval", "--out", str(out), "--modalities", "point", "--n", "8", "--attacks", "standard", "--eps", "4/255",
         "--steps", "5", "--estimate", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not out.exists()
    import json

    shown = json.loads(result.stdout)
    assert shown["rows"][0]["modality"] == "point" and shown["rows"][0]["samples"] == 8
    assert 0 < shown["least_seconds"] <= shown["most_seconds"]


def test_a_gpu_batch_is_lowered_to_fit_free_memory(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    class OnGpu:
        device = torch.device("cuda")

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10e9, 80e9))  # 10 GB free
    monkeypatch.setattr(cost, "_bytes_per_sample", lambda encoder, modality: 100e6)  # 100 MB per sample
    with caplog.at_level(logging.WARNING):
        assert cost.fitting_batch_size(OnGpu(), [Modality.IMAGE], 128) == 70  # 0.7 x 10 GB / 100 MB
    assert "batch size 128 would not fit 10.0 GB of free GPU memory (100 MB per sample); using 70" in caplog.text
    assert cost.fitting_batch_size(OnGpu(), [Modality.IMAGE], 32) == 32


def test_a_cpu_batch_is_the_one_asked_for(tinybind) -> None:
    assert cost.fitting_batch_size(tinybind, [Modality.IMAGE], 4096) == 4096
