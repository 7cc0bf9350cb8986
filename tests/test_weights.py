"""TinyBind's trained parts: safetensors round trip, refusal of damaged or foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bindguard.encoders.tinybind import create_tinybind, shipped_weights_path
from bindguard.errors import DataError


def test_shipped_weights_are_small_and_load(tinybind) -> None:
    assert shipped_weights_path().stat().st_size < 8_000_000
    assert tinybind.recipe["seed"] == 0


def test_round_trip(tinybind, tmp_path: Path) -> None:
    path = tmp_path / "copy.safetensors"
    tinybind.save_trained(path, recipe={"seed": 0, "note": "copy"})
    copy = create_tinybind(weights=path)
    for key, value in tinybind.trained_state().items():
        assert torch.equal(value, copy.trained_state()[key]), key
    assert copy.recipe["note"] == "copy"


def test_missing_corrupt_foreign_and_mismatched_files(tinybind, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        create_tinybind(weights=tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(DataError, match="corrupt"):
        create_tinybind(weights=corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(DataError, match="not a TinyBind weights file"):
        create_tinybind(weights=foreign)
    mismatched = tmp_path / "mismatched.safetensors"
    state = tinybind.trained_state()
    state.pop("audio_mean")
    save_file(state, str(mismatched), metadata={"format": "bindguard-tinybind/1"})
    with pytest.raises(DataError, match="do not fit"):
        create_tinybind(weights=mismatched)
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"heads": 1}, pickled)  # a pickle, never to be unpickled
    with pytest.raises(DataError):
        create_tinybind(weights=pickled)
