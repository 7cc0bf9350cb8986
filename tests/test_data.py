"""The built-in benchmark: shapes, domains, determinism, disjoint splits, damaged archives."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from bindguard._types import Modality
from bindguard.data import load_dataset
from bindguard.data.builtin.benchmark import MODALITIES, glyph_split, load_builtin, spoken_digits_path
from bindguard.data.builtin.spoken_digits import load_spoken_digits, voice_split
from bindguard.errors import ConfigError, DataError, UnknownNameError

SHAPES = {
    Modality.IMAGE: (3, 32, 32),
    Modality.VIDEO: (4, 3, 32, 32),
    Modality.AUDIO: (16000,),
    Modality.POINT: (256, 3),
    Modality.DEPTH: (1, 32, 32),
    Modality.THERMAL: (1, 32, 32),
}


def test_every_modality_has_ten_classes_in_its_domain(test_benchmark) -> None:
    assert test_benchmark.class_names[3] == "three"
    for modality in MODALITIES:
        data = test_benchmark.data[modality]
        assert tuple(data.inputs.shape[1:]) == SHAPES[modality]
        assert set(data.labels.tolist()) == set(range(10))
        assert torch.isfinite(data.inputs).all()
        if modality is Modality.POINT:
            assert data.inputs.norm(dim=-1).max() <= 1.0
            assert data.inputs.mean(dim=1).abs().max() < 1e-4  # centred
        elif modality is Modality.AUDIO:
            assert data.inputs.abs().max() <= 1.0
        else:
            assert data.inputs.min() >= 0.0 and data.inputs.max() <= 1.0


def test_rendering_is_deterministic_and_variants_differ() -> None:
    first = load_builtin(split="test", modalities=[Modality.IMAGE, Modality.POINT], limit=16)
    second = load_builtin(split="test", modalities=[Modality.IMAGE, Modality.POINT], limit=16)
    other = load_builtin(split="test", modalities=[Modality.IMAGE], variant=1, limit=16)
    assert torch.equal(first.data[Modality.IMAGE].inputs, second.data[Modality.IMAGE].inputs)
    assert torch.equal(first.data[Modality.POINT].inputs, second.data[Modality.POINT].inputs)
    assert not torch.equal(first.data[Modality.IMAGE].inputs, other.data[Modality.IMAGE].inputs)


def test_splits_are_disjoint_by_glyph_and_by_voice() -> None:
    train, test = set(glyph_split("train").tolist()), set(glyph_split("test").tolist())
    assert not train & test and len(train) + len(test) == 1797
    clips = load_spoken_digits(spoken_digits_path())
    train_voices, test_voices = voice_split(sorted({clip.voice for clip in clips}))
    assert train_voices and test_voices and not train_voices & test_voices
    audio_train = load_builtin(split="train", modalities=[Modality.AUDIO]).data[Modality.AUDIO]
    audio_test = load_builtin(split="test", modalities=[Modality.AUDIO]).data[Modality.AUDIO]
    assert {clips[i].voice for i in audio_test.instance_ids.tolist()} <= test_voices
    assert {clips[i].voice for i in audio_train.instance_ids.tolist()} <= train_voices


def test_glyph_modalities_share_instances_and_poses() -> None:
    benchmark = load_builtin(split="test", modalities=[Modality.IMAGE, Modality.DEPTH], limit=8)
    assert torch.equal(benchmark.data[Modality.IMAGE].instance_ids, benchmark.data[Modality.DEPTH].instance_ids)


def test_bad_requests_fail_clearly() -> None:
    with pytest.raises(UnknownNameError, match="bindguard data list"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="unknown split"):
        load_builtin(split="validation")
    with pytest.raises(ConfigError, match="limit"):
        load_builtin(limit=0)
    with pytest.raises(DataError, match="empty"):
        load_builtin(modalities=[])


def test_missing_or_corrupt_audio_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_builtin(modalities=[Modality.AUDIO], audio_path=tmp_path / "absent.zip")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="bindguard data build"):
        load_spoken_digits(corrupt)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("manifest.json", '{"format_version": 1, "sample_rate": 16000, "clips": []}')
    with pytest.raises(DataError, match="no clips"):
        load_spoken_digits(empty)
