"""The CLI as a user drives it: tables, JSON, results files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bindguard.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_models_list_json() -> None:
    result = invoke("models", "list", "--json")
    assert result.exit_code == 0
    assert [row["name"] for row in json.loads(result.stdout)] == [
        "tinybind",
        "imagebind-huge",
        "languagebind",
        *(f"languagebind-{tower}" for tower in ("image", "video", "audio", "depth", "thermal")),
        "clip",
        "open-clip",
        "clap",
    ]


def test_eval_writes_schema_versioned_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "eval",
        "--model",
        "tinybind",
        "--data",
        "builtin",
        "--modalities",
        "image,depth,audio",
        "--n",
        "40",
        "--out",
        str(out),
        "--json",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((out / "results.json").read_text())
    assert printed["rows"] == written["rows"]
    assert written["schema_version"] == 1 and written["model"] == "tinybind" and written["seed"] == 0
    assert {"bindguard", "torch"} <= set(written["versions"])
    zero_shot = [row for row in written["rows"] if row["task"] == "zero-shot"]
    assert [row["modality"] for row in zero_shot] == ["image", "depth", "audio"]
    for row in written["rows"]:
        assert row["attack"] == "none" and row["eps"] == 0.0 and row["n"] > 0
    instance = [row for row in written["rows"] if row.get("level") == "instance"]
    assert {(row["query"], row["gallery"]) for row in instance} == {("image", "depth"), ("depth", "image")}
    assert not list(out.glob("*.partial")) and not list(out.glob(".*partial"))


def test_eval_table_output(tmp_path: Path) -> None:
    result = invoke("eval", "--modalities", "point", "--n", "20", "--out", str(tmp_path / "t"), "--quiet")
    assert result.exit_code == 0
    assert "point" in result.stdout and "top-1 %" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "imagebind-giant"], "unknown encoder 'imagebind-giant'"),
        (["--data", "cifar10"], "unknown data set 'cifar10'"),
        (["--modalities", "image,smell"], "unknown modality 'smell'"),
        (["--modalities", "text"], "not available"),
        (["--weights", "/nonexistent/tinybind.safetensors"], "not found"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never"
    result = invoke("eval", "--out", str(out), "--quiet", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert not out.exists(), "a failed run left files behind"


def test_corrupt_weights_file_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(b"garbage")
    result = invoke("eval", "--out", str(tmp_path / "x"), "--weights", str(weights), "--quiet")
    assert result.exit_code == 2 and "corrupt" in result.output


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    result = invoke("eval", "--out", str(existing), "--quiet")
    assert result.exit_code == 2 and "not a folder" in result.output
    assert existing.read_text() == "keep me"


def test_train_refuses_a_wrong_suffix(tmp_path: Path) -> None:
    result = invoke("tinybind", "train", "--out", str(tmp_path / "weights.pt"), "--quiet")
    assert result.exit_code == 2 and ".safetensors" in result.output


def _data_file(path: Path, images, labels, class_names=("zero", "one")) -> Path:
    from safetensors.torch import save_file

    save_file(
        {"image": images, "image.labels": labels}, str(path), metadata={"class_names": json.dumps(list(class_names))}
    )
    return path


def test_user_data_file_is_evaluated(tmp_path: Path) -> None:

    from bindguard.data import load_dataset

    builtin = load_dataset(
        "builtin", split="test", modalities=[__import__("bindguard")._types.Modality.IMAGE], limit=30
    )
    names = builtin.class_names
    data = _data_file(
        tmp_path / "mine.safetensors",
        builtin.data["image"].inputs.contiguous(),
        builtin.data["image"].labels.contiguous(),
        names,
    )
    result = invoke("eval", "--data", str(data), "--out", str(tmp_path / "r"), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["rows"][0]
    # the same 30 images, labels and class names as the built-in benchmark's: the same numbers
    same = __import__("bindguard").evaluate("tinybind", "builtin", modalities="image", attacks=None, n=30)
    assert row == same.clean[0].to_dict()


def test_two_class_user_data_runs_the_standard_ensemble(tmp_path: Path) -> None:
    """The README's two-class example: targets are capped at C - 1 = 1 and the row says so."""
    from bindguard.data import load_dataset

    builtin = load_dataset("builtin", split="test", modalities=["image"], limit=60)
    keep = builtin.data["image"].labels < 2
    data = _data_file(
        tmp_path / "two.safetensors",
        builtin.data["image"].inputs[keep].contiguous(),
        builtin.data["image"].labels[keep].contiguous(),
        ("zero", "one"),
    )
    result = invoke(
        "eval", "--data", str(data), "--out", str(tmp_path / "r"), "--attacks", "standard", "--eps", "4/255",
        "--steps", "2", "--square-queries", "5", "--no-checks", "--json", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (robust,) = [row for row in json.loads(result.stdout)["rows"] if row["attack"] == "standard"]
    assert robust["notes"] == ["apgd-t: 1 target class(es), not 3: the data has 2 classes"]
    assert robust["top1"] <= robust["clean_top1"]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("shape", "takes image inputs of shape (B, 3, 32, 32)"),
        ("dtype", "floating point"),
        ("domain", "outside the domain"),
        ("nan", "NaN or Inf"),
        ("empty", "holds no samples"),
    ],
)
def test_bad_user_tensors_give_one_line_and_exit_2(tmp_path: Path, images: str, message: str) -> None:
    import torch

    labels = torch.tensor([0, 1])
    tensors = {
        "shape": torch.rand(2, 3, 16, 16),
        "dtype": torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),
        "domain": torch.rand(2, 3, 32, 32) * 255,
        "nan": torch.full((2, 3, 32, 32), float("nan")),
        "empty": torch.rand(0, 3, 32, 32),
    }
    if images == "empty":
        labels = labels[:0]
    data = _data_file(tmp_path / "bad.safetensors", tensors[images], labels)
    out = tmp_path / "never"
    result = invoke("eval", "--data", str(data), "--out", str(out), "--quiet")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_missing_and_corrupt_data_files(tmp_path: Path) -> None:
    result = invoke("eval", "--data", str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 2 and "not found" in result.output
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    result = invoke("eval", "--data", str(corrupt), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 2 and "corrupt" in result.output and not (tmp_path / "o").exists()


def _calibrate(out: Path, *extra: str):
    return invoke(
        "calibrate", "--out", str(out), "--modalities", "point", "--limit", "32", "--epochs", "1",
        "--batch-size", "16", "--n", "8", "--steps", "2", "--square-queries", "10", "--no-checks", "--quiet", *extra,
    )  # fmt: skip


def test_calibrate_saves_a_folder_that_every_command_loads(tmp_path: Path) -> None:
    out = tmp_path / "calibration"
    result = _calibrate(out, "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    row = next(r for r in results["rows"] if r["task"] == "calibration")
    assert row["modality"] == "point" and row["method"] == "purifier+lora" and row["objective"] == "ce"
    assert set(row["before"]) == {"clean_top1", "clean_top5", "robust_top1", "robust_top5"}
    assert row["after"]["robust_top1"] <= row["after"]["clean_top1"]
    assert row["eps_abs"] == pytest.approx(2 * 4 / 255) and row["steps"] == 2 and row["n"] == 8
    assert 0 < row["trainable_fraction"] < 0.01
    alignment = row["instance_recall@1"]  # point -> image gallery of the uncalibrated encoder
    assert alignment["gallery"] == "image" and 0 <= alignment["after"] <= 1 and alignment["before"] > 1 / 8
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "results.json"}
    assert not (out / "checkpoints").exists()
    evaluated = invoke("eval", "--out", str(tmp_path / "eval"), "--modalities", "point", "--n", "8",
                       "--calibration", str(out), "--json")  # fmt: skip
    assert evaluated.exit_code == 0
    assert json.loads(evaluated.stdout)["settings"]["calibration"] == str(out)
    attacked = invoke("attack", "--out", str(tmp_path / "examples"), "--modality", "point", "--n", "4",
                      "--steps", "2", "--calibration", str(out), "--json")  # fmt: skip
    assert attacked.exit_code == 0
    assert (tmp_path / "examples" / "adversarial-point.safetensors").is_file()
    # rerunning the same command finds the modality done and does not retrain it
    before = (out / "model.safetensors").read_bytes()
    assert _calibrate(out, "--no-evaluate").exit_code == 0
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "purifer"], "did you mean 'purifier'"),
        (["--objective", "fare"], "unknown calibration objective"),
        (["--mode", "sometimes"], "unknown calibration mode"),
        (["--eps", "4/0"], "eps"),
        (["--modalities", "smell"], "smell"),
    ],
)
def test_calibrate_bad_options_fail_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "calibration"
    result = invoke("calibrate", "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_calibration_of_another_model_or_a_pickle_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"\x80\x04not really")
    result = invoke("eval", "--out", str(tmp_path / "e"), "--calibration", str(folder), "--n", "4")
    assert result.exit_code == 2 and "pickled checkpoint" in result.output
    assert not (tmp_path / "e").exists()

    other = tmp_path / "other-model"
    made = invoke(
        "calibrate", "--out", str(other), "--modalities", "point", "--method", "head", "--mode", "static",
        "--limit", "8", "--epochs", "1", "--batch-size", "8", "--no-evaluate", "--quiet",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    config = json.loads((other / "config.json").read_text())
    config["encoder"] = "imagebind-huge@0123456789abcdef"
    (other / "config.json").write_text(json.dumps(config))
    result = invoke("eval", "--out", str(tmp_path / "e2"), "--calibration", str(other), "--n", "4")
    assert result.exit_code == 2 and "made for encoder 'imagebind-huge'" in result.output
    assert not (tmp_path / "e2").exists()


def test_verbose_logs_each_epoch(tmp_path: Path) -> None:
    result = invoke(
        "--verbose", "calibrate", "--out", str(tmp_path / "c"), "--modalities", "point", "--limit", "16",
        "--epochs", "1", "--batch-size", "8", "--no-evaluate", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0
    assert "point purifier+lora epoch 1/1: loss" in result.output
