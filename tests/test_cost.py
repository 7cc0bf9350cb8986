"""The warning before a run that would take hours: large encoders on the CPU are timed on one sample."""

from __future__ import annotations

import logging

import pytest

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
