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
    Modality.EVENT: (4, 2, 32, 32),
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


# --- sizes an encoder asks for ---------------------------------------------------------------------

# Computed from the renderer before it took sizes: sum of |x| and four values of load_builtin(split="test", limit=8),
# at flat positions 0, n // 3, n // 2 and n - 1. The shipped TinyBind weights were trained on exactly these inputs.
GOLDEN = {
    Modality.IMAGE: (13268.28548, (0.4034038782119751, 0.8097648620605469, 0.3958171606063843, 0.7702665328979492)),
    Modality.VIDEO: (49051.456474, (1.0, 0.15773382782936096, 0.5834836363792419, 0.0)),
    Modality.AUDIO: (
        6075.831767,
        (0.0019905390217900276, 0.032198790460824966, 0.007426708471029997, -0.002168362494558096),
    ),
    Modality.POINT: (
        1416.449878,
        (0.35234761238098145, -0.030973471701145172, 0.2645239233970642, -0.10367778688669205),
    ),
    Modality.DEPTH: (2691.466641, (0.25062769651412964, 0.40113815665245056, 0.2541223168373108, 0.2843700051307678)),
    Modality.THERMAL: (
        3173.353958,
        (0.31760284304618835, 0.5965737104415894, 0.18533286452293396, 0.20362822711467743),
    ),
}
ASKED = {
    Modality.IMAGE: (3, 40, 56),
    Modality.VIDEO: (6, 3, 20, 20),
    Modality.POINT: (100, 3),
    Modality.DEPTH: (1, 24, 24),
    Modality.THERMAL: (1, 48, 48),
    Modality.AUDIO: (6000,),
    Modality.EVENT: (3, 2, 24, 40),
}


GOLDEN_EVENT_COUNT, GOLDEN_EVENT_SATURATED = 6679, 83


def test_default_event_rendering_matches_its_golden_sum() -> None:
    """Events are sparse (the values picked above are zeros), so their sum and counts are the golden values."""
    inputs = load_builtin(split="test", modalities=[Modality.EVENT], limit=8).data[Modality.EVENT].inputs
    assert float(inputs.double().sum()) == pytest.approx(2520.447938, rel=1e-6)
    assert int((inputs > 0).sum()) == GOLDEN_EVENT_COUNT
    assert int((inputs == 1).sum()) == GOLDEN_EVENT_SATURATED


def test_default_rendering_matches_the_golden_values(test_benchmark) -> None:
    for modality, (total, values) in GOLDEN.items():
        inputs = test_benchmark.data[modality].inputs[:8].flatten()
        count = inputs.numel()
        assert float(inputs.double().abs().sum()) == pytest.approx(total, rel=1e-6), modality
        picked = inputs[[0, count // 3, count // 2, count - 1]].tolist()
        assert picked == pytest.approx(values, abs=1e-6), modality


def test_native_shapes_asked_explicitly_are_the_default(test_benchmark) -> None:
    explicit = load_builtin(split="test", limit=4, shapes=SHAPES, sample_rate=16_000)
    for modality in MODALITIES:
        assert torch.equal(explicit.data[modality].inputs, test_benchmark.data[modality].inputs[:4]), modality


def test_renders_at_asked_shapes_and_sample_rate_in_the_domain() -> None:
    benchmark = load_dataset("builtin", split="test", limit=4, shapes=ASKED, sample_rate=24_000)
    again = load_builtin(split="test", limit=4, shapes=ASKED, sample_rate=24_000)
    for modality in MODALITIES:
        inputs = benchmark.data[modality].inputs
        assert tuple(inputs.shape) == (4, *ASKED[modality]), modality
        assert torch.equal(inputs, again.data[modality].inputs), f"{modality} is not deterministic"
        assert bool(torch.isfinite(inputs).all())
        if modality is Modality.POINT:
            assert inputs.norm(dim=-1).max() <= 1.0
        elif modality is Modality.AUDIO:
            assert inputs.abs().max() <= 1.0 and inputs.abs().max() > 0.05
        else:
            assert inputs.min() >= 0.0 and inputs.max() <= 1.0


def test_resized_maps_show_the_same_scene(test_benchmark) -> None:
    """A resized image is the native one seen at another size: pooled back, it matches the native image."""
    large = load_builtin(split="test", modalities=[Modality.IMAGE], limit=4, shapes={Modality.IMAGE: (3, 64, 64)})
    pooled = torch.nn.functional.avg_pool2d(large.data[Modality.IMAGE].inputs, 2)
    native = test_benchmark.data[Modality.IMAGE].inputs[:4]
    assert (pooled - native).abs().mean() < 0.03


def test_video_frames_follow_the_same_path(test_benchmark) -> None:
    """More frames sample the same slide: the first and last frames sit where the native clip's do."""
    native = test_benchmark.data[Modality.VIDEO].inputs[:4]
    longer = load_builtin(split="test", modalities=[Modality.VIDEO], limit=4, shapes={Modality.VIDEO: (7, 3, 32, 32)})
    frames = longer.data[Modality.VIDEO].inputs
    for ours, theirs in ((0, 0), (-1, -1)):
        assert (frames[:, ours] - native[:, theirs]).abs().mean() < 0.05  # the frames differ only by sensor noise


def test_audio_at_another_rate_is_the_same_sound(test_benchmark) -> None:
    native = test_benchmark.data[Modality.AUDIO].inputs[:3]
    faster = load_builtin(split="test", modalities=[Modality.AUDIO], limit=3, sample_rate=32_000)
    waveforms = faster.data[Modality.AUDIO].inputs
    assert tuple(waveforms.shape) == (3, 32_000)  # one-second windows at the asked rate
    assert (waveforms[:, ::2] - native).abs().mean() < 1e-3  # every other sample is an original one
    assert torch.equal(faster.data[Modality.AUDIO].labels, test_benchmark.data[Modality.AUDIO].labels[:3])


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({Modality.IMAGE: (1, 32, 32)}, r"image samples have shape \(3, H, W\).*got \(1, 32, 32\)"),
        ({Modality.DEPTH: (3, 32, 32)}, r"depth samples have shape \(1, H, W\).*got \(3, 32, 32\)"),
        ({Modality.VIDEO: (3, 32, 32)}, r"video samples have shape \(T, 3, H, W\)"),
        ({Modality.POINT: (128, 2)}, r"point samples have shape \(N, 3\)"),
        ({Modality.AUDIO: (0,)}, r"audio samples have shape \(S,\)"),
        ({Modality.TEXT: (8,)}, "has no 'text' data"),
    ],
)
def test_shapes_that_do_not_fit_are_refused(shapes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_builtin(limit=1, modalities=[Modality.IMAGE], shapes=shapes)


def test_bad_sample_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample_rate must be a positive integer"):
        load_builtin(limit=1, modalities=[Modality.AUDIO], sample_rate=0)


def test_user_files_ignore_rendering_sizes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "mine.safetensors"
    save_file(
        {"image": torch.rand(2, 3, 8, 8), "image.labels": torch.tensor([0, 1])},
        str(path),
        metadata={"class_names": '["a", "b"]'},
    )
    benchmark = load_dataset(str(path), split="test", shapes={Modality.IMAGE: (3, 224, 224)}, sample_rate=48_000)
    assert tuple(benchmark.data[Modality.IMAGE].inputs.shape) == (2, 3, 8, 8)
