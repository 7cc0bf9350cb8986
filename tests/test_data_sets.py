"""Data sets read from the user's files: every loader on tiny files in its published layout, end to end,
and malformed files refused in one line that names them (or left out with --skip-bad-files)."""

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
from bindguard.data.media import decode_audio, decode_depth, decode_image, decode_video, mesh_points
from bindguard.errors import DataError
from second_encoder import EXTRA_TOWERS, SecondEncoder

# name -> (modality, writes the layout under a folder)
LAYOUTS = {
    "image-folders": ("image", lambda root: fixtures.class_folders(root, fixtures.write_image, ".png", split="val")),
    "thermal-folders": (
        "thermal",
        lambda root: fixtures.class_folders(root, lambda p, seed: fixtures.write_image(p, seed, mode="L"), ".png"),
    ),
    "depth-folders": ("depth", lambda root: fixtures.class_folders(root, fixtures.write_depth, ".png")),
    "audio-folders": ("audio", lambda root: fixtures.class_folders(root, fixtures.write_audio, ".flac")),
    "video-folders": ("video", lambda root: fixtures.class_folders(root, fixtures.write_video, ".mp4")),
    "imagenet-val": ("image", fixtures.imagenet_val),
    "msrvtt": ("video", fixtures.msrvtt),
    "esc50": ("audio", fixtures.esc50),
    "modelnet40": ("point", fixtures.modelnet),
    "modelnet40-h5": ("point", lambda root: fixtures.modelnet_h5(root, points=300)),
}
# Loaders without classes, measured by caption retrieval only.
CAPTIONS_ONLY = {"clotho": ("audio", fixtures.clotho)}
# What each loader's clean and attacked rows measure, where it is more than zero-shot classification.
TASKS = {"msrvtt": {"zero-shot", "caption-retrieval"}, "clotho": {"caption-retrieval"}}
ATTACK = ["--attacks", "pgd", "--steps", "2", "--square-queries", "0", "--no-checks", "--eps", "4/255", "--quiet"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: write(tmp_path_factory.mktemp(name)) for name, (_, write) in (LAYOUTS | CAPTIONS_ONLY).items()}


class ShapeRecordingEncoder(SecondEncoder):
    """The second encoder with every tower, noting the shape of each raw batch it is given."""

    def __init__(self) -> None:
        super().__init__(0, extra_towers=EXTRA_TOWERS)
        self.shapes_seen: set[tuple[Modality, tuple[int, ...]]] = set()

    def _embed(self, modality: Modality, x: torch.Tensor | list[str]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            self.shapes_seen.add((modality, tuple(x.shape[1:])))
        return super()._embed(modality, x)


@pytest.fixture(scope="module")
def second() -> ShapeRecordingEncoder:
    return ShapeRecordingEncoder()


def _eval(*arguments: str) -> object:
    return CliRunner().invoke(app, ["eval", *arguments])


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_loader_runs_eval_end_to_end_clean_and_attacked(name, roots, tmp_path) -> None:
    modality, _ = LAYOUTS[name]
    out = tmp_path / "run"
    result = _eval("--data", name, "--data-root", str(roots[name]), "--modalities", modality, "--n", "3",
                   *ATTACK, "--out", str(out), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    zero_shot = [r for r in rows if r["task"] == "zero-shot" and r["modality"] == modality]
    assert [r["attack"] for r in zero_shot] == ["none", "pgd"]
    assert all(r["n"] == 3 for r in zero_shot)


@pytest.mark.parametrize("name", [*LAYOUTS, *CAPTIONS_ONLY])
def test_every_loader_runs_evaluate_on_the_second_encoder_at_its_own_input_sizes_clean_and_attacked(
    name, roots, second
) -> None:
    """3-frame 224-px clips, 48 x 64 depth, 192-point clouds...: each loader decodes to the encoder's specs."""
    modality, _ = (LAYOUTS | CAPTIONS_ONLY)[name]
    spec = second.input_spec(Modality.parse(modality))
    assert spec.shape != bindguard.create_encoder("tinybind").input_spec(Modality.parse(modality)).shape
    second.shapes_seen.clear()
    results = bindguard.evaluate(
        second, name, data_root=roots[name], modalities=modality, n=3, attacks="pgd", steps=2, square_queries=0,
        checks=False, eps="4/255",
    )  # fmt: skip
    assert second.shapes_seen == {(spec.modality, spec.shape)}
    assert {row.modality for row in results.rows} == {modality}
    tasks = TASKS.get(name, {"zero-shot"})
    assert {row.task for row in results.rows if row.attack == "none"} - {"retrieval"} == tasks
    assert {row.task for row in results.robust} == tasks
    assert all(row.attacks == ["pgd"] and row.top1 <= row.clean_top1 for row in results.robust)


def test_data_list_names_every_loader_with_its_layout() -> None:
    result = CliRunner().invoke(app, ["data", "list", "--json"])
    assert result.exit_code == 0
    listed = {row["name"]: row["description"] for row in json.loads(result.stdout)}
    assert set(LAYOUTS) <= set(listed)
    assert "ROOT/meta/esc50.csv" in listed["esc50"] and "ROOT/CLASS/train|test/*.off" in listed["modelnet40"]


def test_loading_is_deterministic_and_takes_classes_in_turns(roots) -> None:
    first = load_dataset("modelnet40", data_root=roots["modelnet40"], limit=4)
    again = load_dataset("modelnet40", data_root=roots["modelnet40"], limit=4)
    assert torch.equal(first.data[Modality.POINT].inputs, again.data[Modality.POINT].inputs)
    assert first.data[Modality.POINT].labels.tolist() == [0, 1, 2, 0]
    assert first.class_names == ("cat", "dog", "tree frog")


def test_the_test_split_is_the_val_folder_and_a_missing_train_split_is_named(roots) -> None:
    assert len(load_dataset("image-folders", data_root=roots["image-folders"]).data[Modality.IMAGE]) == 6
    with pytest.raises(DataError, match="has no train split: expected a folder named train"):
        load_dataset("image-folders", data_root=roots["image-folders"], split="train")


# ---------------------------------------------------------------- decoding, documented steps


def test_depth_becomes_normalised_disparity(tmp_path) -> None:
    from PIL import Image

    millimetres = np.array([[0, 250], [500, 5000]], dtype=np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "d.png")
    disparity = decode_depth(tmp_path / "d.png", 2, 2)
    assert disparity.shape == (1, 2, 2)
    assert disparity.flatten().tolist() == pytest.approx([0.0, 1.0, 1.0, 0.1], abs=1e-6)


def test_audio_is_mono_resampled_and_centre_cropped(tmp_path) -> None:
    path = fixtures.write_audio(tmp_path / "a.wav", 0, rate=44100, seconds=1.0, channels=2)
    wave = decode_audio(path, samples=8000, sample_rate=16000)
    assert wave.shape == (8000,) and float(wave.abs().max()) <= 1.0
    short = decode_audio(path, samples=20000, sample_rate=16000)  # 16,000 samples, zero-padded at the end
    assert torch.equal(short[16000:], torch.zeros(4000)) and float(short[:16000].abs().max()) > 0.1


def test_an_image_is_resized_by_its_shorter_side_and_centre_cropped(tmp_path) -> None:
    from PIL import Image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 10:30] = 255  # the centre half is white
    Image.fromarray(pixels).save(tmp_path / "i.png")
    image = decode_image(tmp_path / "i.png", 3, 10, 10)
    assert image.shape == (3, 10, 10) and float(image.min()) > 0.9  # the crop is all centre


def test_video_frames_are_spaced_evenly(tmp_path) -> None:
    clip = decode_video(fixtures.write_video(tmp_path / "v.mp4", 0, frames=7), frames=3, height=8, width=8)
    assert clip.shape == (3, 3, 8, 8) and float(clip.min()) >= 0 and float(clip.max()) <= 1


def test_mesh_points_lie_on_the_surface_inside_the_unit_sphere(tmp_path) -> None:
    points = mesh_points(fixtures.write_off(tmp_path / "m.off", 0), 500)
    assert points.shape == (500, 3) and float(points.norm(dim=1).max()) == pytest.approx(1.0)
    assert torch.equal(points, mesh_points(tmp_path / "m.off", 500))


# ---------------------------------------------------------------- malformed files


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line


def test_a_corrupt_image_is_named_and_skip_bad_files_leaves_it_out(tmp_path, caplog) -> None:
    root = fixtures.class_folders(tmp_path / "images", fixtures.write_image, ".png")
    (root / "dog" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "run"
    _refused(
        _eval("--data", "image-folders", "--data-root", str(root), "--out", str(out)), "dog/001.png", "--skip-bad-files"
    )
    assert not out.exists()
    with caplog.at_level(logging.WARNING):
        skipped = _eval(
            "--data", "image-folders", "--data-root", str(root), "--out", str(out), "--skip-bad-files", "--quiet"
        )
    assert skipped.exit_code == 0, skipped.output
    assert json.loads((out / "results.json").read_text())["rows"][0]["n"] == 5
    assert "left out 1 unreadable file(s) of image-folders" in caplog.text


def test_a_truncated_wav_is_named(tmp_path) -> None:
    root = fixtures.class_folders(tmp_path / "sounds", fixtures.write_audio, ".wav")
    path = root / "cat" / "000.wav"
    path.write_bytes(path.read_bytes()[:30])
    _refused(_eval("--data", "audio-folders", "--data-root", str(root), "--out", str(tmp_path / "run")), "cat/000.wav")


def test_an_empty_class_folder_is_named(tmp_path) -> None:
    root = fixtures.class_folders(tmp_path / "images", fixtures.write_image, ".png")
    (root / "eel").mkdir()
    _refused(_eval("--data", "image-folders", "--data-root", str(root), "--out", str(tmp_path / "run")), "eel has no")


def test_a_csv_row_naming_a_missing_file_is_named(tmp_path) -> None:
    root = fixtures.esc50(tmp_path / "esc")
    missing = sorted((root / "audio").iterdir())[0]
    missing.unlink()
    _refused(
        _eval("--data", "esc50", "--data-root", str(root), "--out", str(tmp_path / "run")),
        "esc50.csv line",
        missing.name,
    )


def test_a_video_with_zero_frames_is_named(tmp_path) -> None:
    root = fixtures.class_folders(tmp_path / "clips", fixtures.write_video, ".mp4")
    fixtures.write_video(root / "dog" / "000.mp4", 0, frames=0)
    _refused(_eval("--data", "video-folders", "--data-root", str(root), "--out", str(tmp_path / "run")), "dog/000.mp4")


def test_a_broken_mesh_is_named(tmp_path) -> None:
    root = fixtures.modelnet(tmp_path / "meshes")
    (root / "cat" / "test" / "cat_0000.off").write_text("OFF\n8 6 0\n0 0 0\n")
    _refused(_eval("--data", "modelnet40", "--data-root", str(root), "--out", str(tmp_path / "run")), "cat_0000.off")


def test_a_missing_data_root_is_one_line(tmp_path) -> None:
    _refused(_eval("--data", "esc50", "--out", str(tmp_path / "run")), "--data-root PATH")
    _refused(
        _eval("--data", "esc50", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")),
        "is not a folder",
    )


def test_a_loader_for_another_modality_says_which_it_holds(roots, tmp_path) -> None:
    _refused(
        _eval("--data", "esc50", "--data-root", str(roots["esc50"]), "--modalities", "image", "--out", str(tmp_path)),
        "holds audio only",
    )


# ---------------------------------------------------------------- the prepared cache


def test_a_prepared_cache_streams_the_same_samples_and_rows(roots, tmp_path) -> None:
    from bindguard.data.prepared import ShardedRows

    cache = tmp_path / "cache"
    prepared = bindguard.prepare_data("modelnet40", data_root=roots["modelnet40"], out=cache, shard_size=4)
    assert prepared.written and prepared.manifest["count"] == 6 and len(prepared.manifest["shards"]) == 2
    assert len(prepared.manifest["files"]) == 6 and all(len(h) == 64 for h in prepared.manifest["files"].values())
    direct = load_dataset("modelnet40", data_root=roots["modelnet40"], shapes={"point": (256, 3)})
    streamed = load_dataset(str(cache))
    rows = streamed.data[Modality.POINT].inputs
    assert isinstance(rows, ShardedRows) and len(rows) == 6
    assert torch.equal(rows[0:6], direct.data[Modality.POINT].inputs)
    order = torch.tensor([5, 0, 3, 4, 1])  # across both shards, out of order
    assert torch.equal(rows[order], direct.data[Modality.POINT].inputs[order])
    assert torch.equal(streamed.data[Modality.POINT].labels, direct.data[Modality.POINT].labels)
    settings = {"modalities": "point", "attacks": "pgd", "steps": 2, "square_queries": 0, "checks": False}
    from_cache = bindguard.evaluate("tinybind", str(cache), **settings)
    from_files = bindguard.evaluate("tinybind", "modelnet40", data_root=roots["modelnet40"], **settings)
    assert [r.top1 for r in from_cache.robust] == [r.top1 for r in from_files.robust]


def test_preparing_again_is_a_no_op_and_a_changed_or_missing_file_is_named(tmp_path) -> None:
    root = fixtures.esc50(tmp_path / "esc")
    cache = tmp_path / "cache"
    first = bindguard.prepare_data("esc50", data_root=root, out=cache)
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    again = bindguard.prepare_data("esc50", data_root=root, out=cache)
    assert first.written and not again.written and (cache / "manifest.json").stat().st_mtime_ns == stamp
    changed = sorted((root / "audio").glob("5-*"))[0]
    fixtures.write_audio(changed, seed=99, rate=44100, seconds=1.0, channels=1)
    with pytest.raises(DataError, match=f"{changed.name} changed since .* was prepared; fix: --rebuild"):
        bindguard.prepare_data("esc50", data_root=root, out=cache)
    assert bindguard.prepare_data("esc50", data_root=root, out=cache, rebuild=True).written
    changed.unlink()  # ESC-50's table still names it: the listing refuses first, naming it too
    with pytest.raises(DataError, match=changed.name):
        bindguard.prepare_data("esc50", data_root=root, out=cache)
    folders = fixtures.class_folders(tmp_path / "images", fixtures.write_image, ".png")
    bindguard.prepare_data("image-folders", data_root=folders, out=tmp_path / "images-cache")
    (folders / "dog" / "001.png").unlink()
    with pytest.raises(DataError, match="dog/001.png is missing since"):
        bindguard.prepare_data("image-folders", data_root=folders, out=tmp_path / "images-cache")
    with pytest.raises(DataError, match=r"other settings \(changed: limit\)"):
        bindguard.prepare_data("image-folders", data_root=folders, out=tmp_path / "images-cache", n=1)


def test_an_unfinished_preparation_is_redone(tmp_path) -> None:
    root = fixtures.class_folders(tmp_path / "images", fixtures.write_image, ".png")
    cache = tmp_path / "cache"
    bindguard.prepare_data("image-folders", data_root=root, out=cache, shard_size=2)
    (cache / "manifest.json").unlink()  # as if interrupted before the manifest, written last
    (cache / "shard-00099.safetensors").write_bytes(b"stale")
    again = bindguard.prepare_data("image-folders", data_root=root, out=cache, shard_size=2)
    assert again.written and sorted(p.name for p in cache.glob("shard-*")) == [
        f"shard-0000{i}.safetensors" for i in range(3)
    ]


def test_data_prepare_on_the_command_line_says_what_it_did(roots, tmp_path) -> None:
    arguments = [
        "data",
        "prepare",
        "audio-folders",
        "--data-root",
        str(roots["audio-folders"]),
        "--out",
        str(tmp_path / "c"),
    ]
    first, second = CliRunner().invoke(app, arguments), CliRunner().invoke(app, arguments)
    assert first.exit_code == 0 and "prepared 6 audio samples of audio-folders (test) in 1 shard(s)" in first.stderr
    assert second.exit_code == 0 and "up to date" in second.stderr
    _refused(CliRunner().invoke(app, ["data", "prepare", "modelnet40-h5", "--data-root", str(roots["modelnet40-h5"]),
                                      "--out", str(tmp_path / "h")]), "nothing to prepare")  # fmt: skip


# ---------------------------------------------------------------- caption retrieval


def test_caption_retrieval_is_measured_clean_both_ways_and_with_the_video_attacked(roots, tmp_path) -> None:
    out = tmp_path / "run"
    result = _eval("--data", "msrvtt", "--data-root", str(roots["msrvtt"]), "--modalities", "video", "--n", "6",
                   "--attacks", "pgd,rank", "--steps", "3", "--square-queries", "0", "--no-checks", "--eps", "4/255",
                   "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Caption retrieval" in result.stdout
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if r["task"] == "caption-retrieval"]
    clean = {(r["query"], r["gallery"]): r for r in rows if r["attack"] == "none"}
    assert set(clean) == {("text", "video"), ("video", "text")}
    assert clean[("text", "video")]["n"] == 12 and clean[("video", "text")]["n"] == 6  # two captions per video
    attacked = {(r["query"], r["gallery"]): r for r in rows if r["attack"] != "none"}
    assert set(attacked) == set(clean)  # the video attacked as the query and as the gallery item
    for direction, row in attacked.items():
        assert row["recall@1"] == row["top1"] <= row["clean_top1"]
        assert row["clean_top1"] == pytest.approx(clean[direction]["recall@1"]) and row["n"] == clean[direction]["n"]
    assert attacked[("video", "text")]["attacks"] == ["pgd", "rank"]
    assert attacked[("text", "video")]["attacks"] == ["pgd", "hide-rank"]
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and "Caption retrieval" in (out / "report.html").read_text()


def test_caption_centers_score_each_sample_by_its_nearest_caption() -> None:
    from bindguard.evaluation.captions import caption_centers
    from bindguard.objectives.base import center_scores

    texts = torch.eye(3)  # three captions: two of sample 0, one of sample 1
    centers = caption_centers(texts, torch.tensor([0, 0, 1]))
    assert centers.shape == (2, 2, 3) and torch.equal(centers[1, 0], centers[1, 1])
    scores = center_scores(torch.tensor([[0.0, 1.0, 0.0]]), centers)
    assert scores.argmax(1).tolist() == [0]  # its second caption is the nearest


def test_imagenet_classes_are_named_from_the_synset_mapping(roots, tmp_path) -> None:
    validation = load_dataset("imagenet-val", data_root=roots["imagenet-val"])
    assert validation.class_names == ("tabby", "Chihuahua", "tree frog")
    assert validation.data[Modality.IMAGE].labels.tolist() == [0, 1, 2, 0, 1, 2]
    folders = tmp_path / "train-folders"
    for wnid in fixtures.WNIDS:
        fixtures.write_image(folders / "train" / wnid / "a.JPEG", seed=1)
    (folders / "LOC_synset_mapping.txt").write_text((roots["imagenet-val"] / "LOC_synset_mapping.txt").read_text())
    train = load_dataset("image-folders", data_root=folders, split="train")
    assert train.class_names == ("tree frog", "Chihuahua", "tabby")  # wnid folders in sorted order, named


def test_audio_with_captions_only_is_measured_by_caption_retrieval(tmp_path) -> None:
    root = fixtures.clotho(tmp_path / "clotho")
    out = tmp_path / "run"
    result = _eval("--data", "clotho", "--data-root", str(root), "--modalities", "audio", "--attacks", "pgd",
                   "--steps", "2", "--square-queries", "0", "--no-checks", "--eps", "4/255", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {row["task"] for row in rows} == {"caption-retrieval"}  # no classes: no zero-shot rows
    clean = {(r["query"], r["gallery"]): r["n"] for r in rows if r["attack"] == "none"}
    assert clean == {("text", "audio"): 20, ("audio", "text"): 4}
    assert [(r["attack"], r["gallery"]) for r in rows if r["attack"] != "none"] == [("pgd", "text"), ("pgd", "audio")]
