"""Event recordings read from files (issue 14): N-Caltech101 ``.bin`` files and plain NumPy event lists.

Golden values for the readers and for ``events_to_tensor``, both loaders on tiny files in their
layouts (``ncaltech101``, ``event-folders``), malformed files refused naming them (or counted with
``--skip-bad-files``), and evaluation end to end: on the test-only second encoder's event tower
through the library, and on TinyBind's through the command line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bindguard
import media_fixtures as fixtures
from bindguard._types import Modality
from bindguard.cli.main import app
from bindguard.data import load_dataset
from bindguard.data.events import NCALTECH101_SENSOR, decode_recording, load_event_folders, read_bin, read_numpy
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.modalities.event import events_to_tensor
from second_encoder import EVENT_BINS, EVENT_HEIGHT, EVENT_WIDTH, SecondEncoder

SECOND_SHAPE = (EVENT_BINS, 2, EVENT_HEIGHT, EVENT_WIDTH)
ATTACK = ["--attacks", "pgd", "--steps", "2", "--square-queries", "0", "--no-checks", "--eps", "4/255", "--quiet"]
LAYOUTS = {"ncaltech101": fixtures.ncaltech101, "event-folders": fixtures.event_folders}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: write(tmp_path_factory.mktemp(name)) for name, write in LAYOUTS.items()}


@pytest.fixture(scope="module")
def second() -> SecondEncoder:
    return SecondEncoder(0, extra_towers=[Modality.EVENT])


@pytest.fixture(scope="module")
def tinybind_with_events() -> None:
    assert Modality.EVENT in bindguard.create_encoder("tinybind").modalities  # the shipped event head loads


def _events(recording) -> list[list[float]]:
    return [recording.x.tolist(), recording.y.tolist(), recording.t.tolist(), recording.p.tolist()]


# ---------------------------------------------------------------- readers: golden values


def test_bin_reader_decodes_the_documented_bit_layout(tmp_path) -> None:
    path = tmp_path / "three.bin"
    path.write_bytes(
        bytes([3, 7, 0x81, 0x23, 0x45])  # x 3, y 7, ON, t 0x012345
        + bytes([255, 0, 0x7F, 0xFF, 0xFF])  # x 255, y 0, OFF, t 2**23 - 1
        + bytes([0, 179, 0x80, 0x00, 0x00])  # x 0, y 179, ON, t 0
    )
    assert _events(read_bin(path)) == [[3, 255, 0], [7, 0, 179], [0x012345, 2**23 - 1, 0], [1, 0, 1]]
    assert fixtures.event_bytes([3], [7], [0x012345], [1]) == bytes([3, 7, 0x81, 0x23, 0x45])


def test_a_bin_overflow_marker_is_dropped_and_advances_later_times(tmp_path) -> None:
    path = tmp_path / "overflow.bin"
    path.write_bytes(fixtures.event_bytes([1, 0, 2], [2, 240, 3], [100, 0, 50], [1, 0, 0]))  # the middle row, y 240
    assert _events(read_bin(path)) == [[1, 2], [2, 3], [100, 50 + 2**13], [1, 0]]


def test_npy_structured_and_n_by_4_and_npz_give_the_same_events(tmp_path) -> None:
    x, y, t, p = [4, 0, 33], [1, 2, 3], [10, 20, 35], [1, 0, 1]
    structured = np.zeros(3, dtype=[("t", np.int64), ("x", np.uint16), ("y", np.uint16), ("p", bool)])
    structured["x"], structured["y"], structured["t"], structured["p"] = x, y, t, p
    np.save(tmp_path / "structured.npy", structured)
    np.save(tmp_path / "columns.npy", np.array([x, y, t, p], dtype=np.float64).T)
    np.savez(tmp_path / "arrays.npz", x=x, y=y, t=t, p=p, sensor_size=[34, 40])
    np.savez(tmp_path / "sides.npz", x=x, y=y, t=t, p=p, height=34, width=40)
    for name in ("structured.npy", "columns.npy", "arrays.npz", "sides.npz"):
        assert _events(read_numpy(tmp_path / name)) == [x, y, t, p], name
    assert read_numpy(tmp_path / "structured.npy").sensor_size is None
    assert read_numpy(tmp_path / "arrays.npz").sensor_size == read_numpy(tmp_path / "sides.npz").sensor_size == (34, 40)


def test_events_to_tensor_golden_values() -> None:
    """A 4 x 8 sensor into 3 bins of 2 x 2: the centred 4 x 4 region is kept (x 2..5), t 0..4 spans bins 0..2."""
    x, y, t, p = [2, 3, 5, 7], [0, 1, 3, 2], [0, 1, 2, 4], [1, 1, -1, 0]
    out = events_to_tensor(np.array(x), np.array(y), np.array(t), np.array(p), sensor_size=(4, 8), bins=3, height=2,
                           width=2)  # fmt: skip
    # counts: ON cell (0, 0) gets 1 in bin 0 (t 0) and the tent's 0.5 + 0.5 in bins 0 and 1 (t 1 -> 0.5);
    # OFF cell (1, 1) gets 1 in bin 1 (t 2 -> 1); the OFF event at x 7 lies outside the region (but sets the span).
    # The 99th percentile of the non-zero counts (0.5, 1, 1.5) is 1.49; densities are counts / 1.49, clamped to 1.
    expected = torch.zeros(3, 2, 2, 2)
    expected[0, 0, 0, 0] = 1.0  # 1.5 / 1.49, clamped
    expected[1, 0, 0, 0] = 0.5 / 1.49
    expected[1, 1, 1, 1] = 1.0 / 1.49
    torch.testing.assert_close(out, expected)


def test_a_sensor_size_comes_from_the_file_then_the_option_then_the_largest_coordinates(tmp_path) -> None:
    x, y, t, p = [0, 3], [0, 1], [0, 1], [1, 1]
    np.savez(tmp_path / "own.npz", x=x, y=y, t=t, p=p, sensor_size=[4, 4])
    np.save(tmp_path / "plain.npy", np.array([x, y, t, p]).T)
    shape = (1, 2, 2, 2)
    own = decode_recording(tmp_path / "own.npz", shape=shape, sensor_size=(8, 8))  # the file's 4 x 4 wins
    spanned = decode_recording(tmp_path / "plain.npy", shape=shape)  # 2 x 4: the centred 2 x 2 is x 1..2
    given = decode_recording(tmp_path / "plain.npy", shape=shape, sensor_size=(4, 4))
    assert own[0, 0].tolist() == given[0, 0].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert spanned[0, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # both events fall outside its crop


# ---------------------------------------------------------------- the loaders


def test_ncaltech101_takes_every_fifth_recording_per_class_as_test_and_names_classes(roots, tmp_path) -> None:
    test = load_dataset("ncaltech101", data_root=roots["ncaltech101"])
    train = load_dataset("ncaltech101", data_root=roots["ncaltech101"] / "Caltech101", split="train")
    assert test.class_names == train.class_names == ("face", "car side", "crab")  # no BACKGROUND_Google
    assert test.data[Modality.EVENT].labels.tolist() == train.data[Modality.EVENT].labels.tolist() == [0, 1, 2]
    assert test.templates[Modality.EVENT][0] == "an event camera recording of a {}."
    seven = fixtures.ncaltech101(tmp_path / "seven", per_class=7)
    counts = [
        len(load_dataset("ncaltech101", data_root=seven, split=s).data[Modality.EVENT]) for s in ("test", "train")
    ]
    assert counts == [6, 15]  # image_0001 and image_0006 of each class are test


def test_loaders_decode_to_the_encoder_s_event_size_in_the_unit_range(roots) -> None:
    for name in LAYOUTS:
        inputs = load_dataset(name, data_root=roots[name], shapes={"event": SECOND_SHAPE}).data[Modality.EVENT].inputs
        assert tuple(inputs.shape[1:]) == SECOND_SHAPE and float(inputs.min()) == 0.0 and float(inputs.max()) == 1.0
        default = load_dataset(name, data_root=roots[name], limit=2).data[Modality.EVENT].inputs
        assert tuple(default.shape) == (2, 4, 2, 32, 32)  # TinyBind's event input when none is asked for


def test_ncaltech101_reads_every_recording_on_its_fixed_sensor(tmp_path) -> None:
    """A recording is not stretched to its own extent: the same events give the same tensor wherever the others lie."""
    root = tmp_path / "nc"
    x, y, t, p = [100, 120, 239], [50, 60, 179], [0, 10, 20], [1, 0, 1]
    (root / "crab").mkdir(parents=True)
    (root / "crab" / "image_0001.bin").write_bytes(fixtures.event_bytes(x, y, t, p))
    loaded = load_dataset("ncaltech101", data_root=root, shapes={"event": (2, 2, 18, 24)}).data[Modality.EVENT]
    expected = events_to_tensor(np.array(x), np.array(y), np.array(t), np.array(p), sensor_size=NCALTECH101_SENSOR,
                                bins=2, height=18, width=24)  # fmt: skip
    assert torch.equal(loaded.inputs[0], expected)


def test_event_folders_read_every_format_with_the_folder_split_rule(roots, tmp_path) -> None:
    loaded = load_dataset("event-folders", data_root=roots["event-folders"])
    assert loaded.class_names == ("cat", "dog", "tree frog") and len(loaded.data[Modality.EVENT]) == 12
    with pytest.raises(DataError, match="has no train split: expected a folder named train"):
        load_dataset("event-folders", data_root=roots["event-folders"], split="train")
    split = fixtures.event_folders(tmp_path / "split", split="val")
    assert len(load_dataset("event-folders", data_root=split).data[Modality.EVENT]) == 12
    with pytest.raises(ConfigError, match=r"sensor_size is \(height, width\)"):
        load_dataset("event-folders", data_root=split, sensor_size=(34,))


def test_only_the_event_folders_loader_takes_a_sensor_size_and_it_reaches_the_decoder(roots) -> None:
    own = load_dataset("event-folders", data_root=roots["event-folders"]).data[Modality.EVENT].inputs
    given = load_dataset("event-folders", data_root=roots["event-folders"], sensor_size=(68, 68))
    changed = [not torch.equal(a, b) for a, b in zip(own, given.data[Modality.EVENT].inputs, strict=True)]
    assert changed == [True] * 9 + [False] * 3  # the three .npz files that give their own sensor keep it
    with pytest.raises(ConfigError, match="data set 'ncaltech101' takes no option sensor_size; it takes: data_root"):
        load_dataset("ncaltech101", data_root=roots["ncaltech101"], sensor_size=(68, 68))
    with pytest.raises(TypeError, match="unexpected keyword argument 'sensor_height'"):
        load_event_folders(data_root=roots["event-folders"], sensor_height=68)


def test_data_list_names_both_event_loaders_with_their_layout() -> None:
    result = CliRunner().invoke(app, ["data", "list", "--json"])
    listed = {row["name"]: row["description"] for row in json.loads(result.stdout)}
    assert "CLASS/*.bin" in listed["ncaltech101"] and "*.bin|npy|npz" in listed["event-folders"]


# ---------------------------------------------------------------- malformed recordings


def test_a_truncated_bin_is_named_and_skip_bad_files_counts_it(tmp_path, caplog) -> None:
    root = fixtures.ncaltech101(tmp_path / "nc")
    path = root / "Caltech101" / "crab" / "image_0001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"crab/image_0001.bin: \d+ bytes is not a whole number of 5-byte events"):
        load_dataset("ncaltech101", data_root=root)
    with caplog.at_level(logging.WARNING):
        loaded = load_dataset("ncaltech101", data_root=root, skip_bad_files=True)
    assert len(loaded.data[Modality.EVENT]) == 2
    assert "left out 1 unreadable file(s) of ncaltech101" in caplog.text and "image_0001.bin" in caplog.text


def test_empty_and_off_sensor_recordings_are_named_and_counted(tmp_path, caplog) -> None:
    root = fixtures.event_folders(tmp_path / "events")
    (root / "cat" / "000.bin").write_bytes(b"")
    np.savez(root / "dog" / "003.npz", x=[40], y=[1], t=[0], p=[1], sensor_size=[34, 34])
    np.save(root / "tree_frog" / "001.npy", np.zeros((5, 3)))
    with pytest.raises(DataError, match="cat/000.bin holds no events"):
        load_dataset("event-folders", data_root=root)
    with caplog.at_level(logging.WARNING):
        loaded = load_dataset("event-folders", data_root=root, skip_bad_files=True)
    assert len(loaded.data[Modality.EVENT]) == 9
    assert "left out 3 unreadable file(s) of event-folders" in caplog.text
    assert "dog/003.npz: event coordinates fall outside the 34 x 34 sensor" in caplog.text
    assert "tree_frog/001.npy: an event array is (N, 4)" in caplog.text


def test_an_event_beyond_ncaltech101_s_recordings_is_named(tmp_path) -> None:
    root = tmp_path / "nc"
    (root / "crab").mkdir(parents=True)
    (root / "crab" / "image_0001.bin").write_bytes(fixtures.event_bytes([250], [3], [0], [1]))
    with pytest.raises(DataError, match="image_0001.bin: events reach x 250, y 3, beyond N-Caltech101's 240 x 180"):
        load_dataset("ncaltech101", data_root=root)


def test_missing_folders_and_roots_are_one_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="give their folder with --data-root PATH"):
        load_dataset("ncaltech101")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("event-folders", data_root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    for name in LAYOUTS:
        with pytest.raises(DataError, match="has no class folders"):
            load_dataset(name, data_root=tmp_path / "empty")
    root = fixtures.ncaltech101(tmp_path / "nc")
    (root / "Caltech101" / "eel").mkdir()
    with pytest.raises(DataError, match="eel has no .bin files"):
        load_dataset("ncaltech101", data_root=root)


def test_a_loader_asked_for_another_modality_says_it_holds_events(roots) -> None:
    for name in LAYOUTS:
        with pytest.raises(DataError, match=f"data set '{name}' holds event recordings only; fix: --modalities event"):
            load_dataset(name, data_root=roots[name], modalities=["image"])


def test_an_encoder_without_an_event_tower_is_refused_before_any_file_is_read(roots) -> None:
    with pytest.raises(UnknownNameError, match="modality .event. is not available here; allowed: all, image, audio"):
        bindguard.evaluate(SecondEncoder(0), "ncaltech101", data_root=roots["ncaltech101"], modalities="event")


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_loaders_run_evaluate_on_the_second_encoder_s_event_tower_clean_and_attacked(name, roots, second) -> None:
    results = bindguard.evaluate(
        second, name, data_root=roots[name], modalities="event", n=3, attacks="pgd", steps=2, square_queries=0,
        checks=False, eps="4/255",
    )  # fmt: skip
    assert [row.modality for row in results.clean] == ["event"] and results.clean[0].n == 3
    (robust,) = results.robust
    assert robust.modality == "event" and robust.top1 <= results.clean[0].top1


def test_a_prepared_ncaltech101_cache_evaluates_as_its_files(roots, second, tmp_path) -> None:
    cache = tmp_path / "cache"
    prepared = bindguard.prepare_data("ncaltech101", data_root=roots["ncaltech101"], out=cache, model=second)
    assert prepared.written and prepared.manifest["count"] == 3
    direct = load_dataset("ncaltech101", data_root=roots["ncaltech101"], shapes={"event": SECOND_SHAPE})
    streamed = load_dataset(str(cache)).data[Modality.EVENT]
    assert torch.equal(streamed.inputs[0:3], direct.data[Modality.EVENT].inputs)
    settings = {"modalities": "event", "attacks": "pgd", "steps": 2, "square_queries": 0, "checks": False}
    from_cache = bindguard.evaluate(second, str(cache), **settings)
    from_files = bindguard.evaluate(second, "ncaltech101", data_root=roots["ncaltech101"], **settings)
    assert [r.top1 for r in from_cache.robust] == [r.top1 for r in from_files.robust]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_eval_on_the_command_line_runs_clean_and_attacked(name, roots, tmp_path, tinybind_with_events) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "--data", name, "--data-root", str(roots[name]), "--modalities", "event",
                                      "--n", "3", *ATTACK, "--out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    zero_shot = [r for r in rows if r["task"] == "zero-shot" and r["modality"] == "event"]
    assert [r["attack"] for r in zero_shot] == ["none", "pgd"] and all(r["n"] == 3 for r in zero_shot)


def test_eval_on_the_command_line_names_a_bad_recording_and_skips_it_on_request(
    tmp_path, caplog, tinybind_with_events
) -> None:
    root = fixtures.ncaltech101(tmp_path / "nc")
    path = root / "Caltech101" / "car_side" / "image_0001.bin"
    path.write_bytes(path.read_bytes()[:-1])
    arguments = ["eval", "--data", "ncaltech101", "--data-root", str(root), "--modalities", "event", *ATTACK,
                 "--out", str(tmp_path / "run")]  # fmt: skip
    refused = CliRunner().invoke(app, arguments)
    assert refused.exit_code == 2 and "car_side/image_0001.bin" in refused.stderr, refused.output
    assert "\n" not in refused.stderr.strip()
    with caplog.at_level(logging.WARNING):
        skipped = CliRunner().invoke(app, [*arguments, "--skip-bad-files"])
    assert skipped.exit_code == 0, skipped.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["rows"][0]["n"] == 2
    assert "left out 1 unreadable file(s) of ncaltech101" in caplog.text
