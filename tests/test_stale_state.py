"""A changed input never yields reused rows: resumable state and finished calibrations are keyed by
what the data, weights and calibration are, not by where they lie, and a stale state is named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import bindguard
from bindguard._types import Modality
from bindguard.data import load_dataset
from bindguard.evaluation.state import RunState

ATTACK = dict(attacks="fgsm", eps=["4/255"], checks=False, square_queries=0, batch_size=8)


def _write_data(path: Path, *, shift: int) -> Path:
    """Eight test images of the built-in benchmark with labels shifted by ``shift`` classes."""
    benchmark = load_dataset("builtin", split="test", limit=8, modalities=[Modality.IMAGE])
    item = benchmark.data[Modality.IMAGE]
    labels = (item.labels + shift) % len(benchmark.class_names)
    save_file(
        {"image": item.inputs.contiguous(), "image.labels": labels},
        str(path),
        metadata={"class_names": json.dumps(list(benchmark.class_names))},
    )
    return path


def _robust(results: bindguard.Results) -> list[dict]:
    return [row.to_dict() for row in results.robust]


def test_rewritten_data_file_is_evaluated_afresh_not_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _write_data(tmp_path / "data.safetensors", shift=0)
    first = bindguard.evaluate("tinybind", str(data), out=tmp_path / "run", **ATTACK)
    _write_data(data, shift=1)  # same path, labels shifted by one: every earlier outcome is wrong now
    with caplog.at_level(logging.WARNING):
        second = bindguard.evaluate("tinybind", str(data), out=tmp_path / "run", **ATTACK)
    fresh = bindguard.evaluate("tinybind", str(data), out=tmp_path / "fresh", **ATTACK)
    assert _robust(second) == _robust(fresh)
    assert _robust(second) != _robust(first)
    assert all(row.top1 <= row.clean_top1 for row in second.robust)
    assert "changed: data_fingerprint" in caplog.text


def test_results_record_what_was_evaluated_by_content(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data.safetensors", shift=0)
    results = bindguard.evaluate("tinybind", str(data), out=tmp_path / "run", seed=3, **ATTACK)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert saved == results.provenance
    assert saved["seed"] == 3
    assert saved["model_identity"].startswith("tinybind@")
    assert set(saved["data"]["fingerprints"]) == {"image"}
    assert {"bindguard", "torch", "python"} <= set(saved["versions"])
    other = _write_data(tmp_path / "other.safetensors", shift=1)
    changed = bindguard.evaluate("tinybind", str(other), **ATTACK).provenance
    assert changed["data"]["fingerprints"]["image"] != saved["data"]["fingerprints"]["image"]


def test_state_for_other_settings_restarts_and_names_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    RunState(path, {"model": "a@1", "steps": 10}).put("apgd-ce", [1, 0, 1])
    same = RunState(path, {"model": "a@1", "steps": 10})
    assert same.get("apgd-ce") == [1, 0, 1] and same.restarted is None
    other = RunState(path, {"model": "a@2", "steps": 10})
    assert other.get("apgd-ce") is None
    assert other.restarted is not None and "model" in other.restarted and "steps" not in other.restarted
    path.write_text("{not json")
    assert RunState(path, {"model": "a@1", "steps": 10}).restarted == "it is unreadable"


def test_changed_training_data_is_calibrated_again_not_skipped(tmp_path: Path) -> None:
    options = dict(method="head", mode="static", epochs=1, attack_steps=1, batch_size=8, modalities="image")
    data = _write_data(tmp_path / "train.safetensors", shift=0)
    first = bindguard.calibrate("tinybind", str(data), out=tmp_path / "cal", **options)
    first_state = {k: v.clone() for k, v in first.calibrations["image"].state_dict().items()}
    _write_data(data, shift=1)
    second = bindguard.calibrate("tinybind", str(data), out=tmp_path / "cal", **options)
    second_state = second.calibrations["image"].state_dict()
    assert any(not torch.equal(first_state[k], second_state[k]) for k in first_state)
    recorded = json.loads((tmp_path / "cal" / "config.json").read_text())["modalities"]["image"]["recipe"]["data"]
    assert recorded == bindguard.pipeline.provenance.data_fingerprints(load_dataset(str(data)))["image"]
