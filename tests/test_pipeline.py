"""The library owns the main job: ``bindguard.evaluate`` / ``calibrate`` give what the CLI gives, and the
Encoder contract (identity, logit scale, device, EOT) is what generic code asks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bindguard
from bindguard.cli.main import app
from bindguard.errors import ConfigError, DataError

SMALL_EVAL = dict(eps=["4/255"], n=6, steps=2, square_queries=5, check_samples=3, batch_size=8)


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _rows(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["rows"]


def test_library_evaluate_reproduces_cli_rows(tmp_path: Path) -> None:
    _cli(
        "eval", "--out", str(tmp_path / "cli"), "--modalities", "image,point", "--attacks", "standard",
        "--eps", "4/255", "--n", "6", "--steps", "2", "--square-queries", "5", "--batch-size", "8", "--quiet",
    )  # fmt: skip
    results = bindguard.evaluate(
        "tinybind", "builtin", modalities="image,point", attacks="standard", checks=True, out=tmp_path / "lib",
        **{**SMALL_EVAL, "check_samples": 32},
    )  # fmt: skip
    assert _rows(tmp_path / "cli") == _rows(tmp_path / "lib") == [row.to_dict() for row in results.rows]
    assert {row.modality for row in results.robust} == {"image", "point"}
    assert all(row.top1 <= row.clean_top1 for row in results.robust)


def test_library_calibrate_reproduces_cli_rows(tmp_path: Path) -> None:
    options = dict(method="head", mode="static", epochs=1, attack_steps=1, batch_size=16)
    _cli(
        "calibrate", "--out", str(tmp_path / "cli"), "--modalities", "image", "--method", "head", "--mode", "static",
        "--epochs", "1", "--attack-steps", "1", "--batch-size", "16", "--limit", "32", "--n", "6", "--steps", "2",
        "--square-queries", "5", "--quiet",
    )  # fmt: skip
    calibrated = bindguard.calibrate(
        "tinybind", "builtin", modalities="image", limit=32, out=tmp_path / "lib", **options
    )
    assert isinstance(calibrated, bindguard.encoders.calibrated.CalibratedEncoder)
    after = bindguard.evaluate_calibration(calibrated, "builtin", n=6, steps=2, square_queries=5, out=tmp_path / "lib")
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("calibration", "train_seconds")} for row in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "cli")) == strip(_rows(tmp_path / "lib")) == strip(after.to_dict()["rows"])
    assert [row.modality for row in after.calibration] == ["image"]


def test_results_file_round_trips_through_typed_rows(tmp_path: Path) -> None:
    bindguard.evaluate(
        "tinybind", "builtin", modalities="depth", attacks="apgd-ce", out=tmp_path, checks=False, **SMALL_EVAL
    )
    written = json.loads((tmp_path / "results.json").read_text())
    results = bindguard.Results.read(tmp_path)
    assert results.to_dict() == written
    kinds = {type(row).__name__ for row in results.rows}
    assert kinds == {"ZeroShotRow", "RetrievalRow", "RobustRow"}
    robust = results.robust[0]
    assert robust.recall_at_1 == written["rows"][-1]["recall@1"] and robust.attacks == ["apgd-ce", "square"]


def test_results_print_as_one_short_line_that_counts_the_rows() -> None:
    from bindguard.evaluation.rows import row_from_dict
    from bindguard.pipeline.demo import DemoOutcome, DemoPlan

    clean = {"modality": "image", "task": "zero-shot", "n": 3, "top1": 1.0, "top5": 1.0, "top1_ci95": [0.4, 1.0],
             "attack": "none", "eps": 0.0}  # fmt: skip
    results = bindguard.Results(model="tinybind", data="builtin", seed=0, rows=[row_from_dict(clean)] * 300,
                                settings={"eps": ["4/255"] * 1000})  # fmt: skip
    assert repr(results) == "Results(model='tinybind', data='builtin', seed=0, rows=[300 clean])"
    assert repr(bindguard.Results(model="m", data="d", seed=1, rows=[])).endswith("rows=[none])")
    outcome = DemoOutcome(results, results, Path("out/report.html"), DemoPlan.of(quick=True))
    assert repr(results) in repr(outcome) and len(repr(outcome)) < 600


def test_unknown_keys_survive_a_round_trip() -> None:
    from bindguard.evaluation.rows import row_from_dict

    row = {"modality": "image", "task": "zero-shot", "n": 3, "top1": 1.0, "top5": 1.0, "top1_ci95": [0.4, 1.0],
           "attack": "none", "eps": 0.0, "from_the_future": {"x": 1}}  # fmt: skip
    assert row_from_dict(row).to_dict() == row


def test_bad_options_fail_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the encoder was built before the options were checked")

    monkeypatch.setattr("bindguard.pipeline.setup.create_encoder", never)
    with pytest.raises(ConfigError, match="eps '-1/255' is malformed"):
        bindguard.evaluate("tinybind", eps=["-1/255"])
    with pytest.raises(ConfigError, match="eps must be > 0"):
        bindguard.evaluate("tinybind", eps=[0.0])
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        bindguard.evaluate("tinybind", steps=0)
    with pytest.raises(bindguard.errors.UnknownNameError, match="did you mean 'tinybind'"):
        bindguard.evaluate("tinybnd")


def test_cuda_device_is_refused_clearly_without_cuda() -> None:
    from bindguard.pipeline import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device(None).type == "cuda"
    else:
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA device; fix: --device cpu"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-of-dreams")


def test_identity_fingerprints_the_loaded_weights(tmp_path: Path, tinybind) -> None:
    from safetensors.torch import load_file, save_file

    from bindguard.encoders import create_encoder
    from bindguard.encoders.tinybind import shipped_weights_path

    state = load_file(str(shipped_weights_path()))
    with open(shipped_weights_path(), "rb") as handle:
        metadata = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))["__metadata__"]
    state["heads.image.2.bias"] = state["heads.image.2.bias"] + 0.01
    save_file(state, str(tmp_path / "other.safetensors"), metadata=metadata)
    other = create_encoder("tinybind", weights=tmp_path / "other.safetensors")
    assert other.identity != tinybind.identity and other.identity.startswith("tinybind@")
    assert other.text_identity == tinybind.text_identity  # same text tower: one center cache
    assert create_encoder("tinybind").identity == tinybind.identity

    calibrated = bindguard.calibrate(tinybind, "builtin", modalities="image", limit=8, method="head", mode="static",
                                     epochs=1, attack_steps=1, batch_size=8, out=tmp_path / "cal")  # fmt: skip
    with pytest.raises(DataError, match="other weights than the loaded"):
        create_encoder("tinybind", weights=tmp_path / "other.safetensors", calibration=tmp_path / "cal")
    assert calibrated.identity.startswith(tinybind.identity + "+calibration@")


def test_logit_scale_comes_from_the_encoder(tinybind) -> None:
    assert tinybind.logit_scale("image") == tinybind.recipe["logit_scale"] == 30.0


def test_randomized_calibration_is_measured_with_eot_once(tmp_path: Path, tinybind) -> None:
    from bindguard.encoders.expectation import EOT_SAMPLES, ExpectationEncoder, with_expectation

    calibrated = bindguard.calibrate(tinybind, "builtin", modalities="image", limit=8, method="purifier",
                                     options={"noise": 0.05}, epochs=1, attack_steps=1, batch_size=8,
                                     out=tmp_path / "cal")  # fmt: skip
    assert calibrated.randomized and not tinybind.randomized
    wrapped = with_expectation(calibrated)
    assert isinstance(wrapped, ExpectationEncoder) and with_expectation(wrapped) is wrapped
    assert with_expectation(tinybind) is tinybind
    results = bindguard.evaluate(tinybind, "builtin", modalities="image", calibration=tmp_path / "cal",
                                 attacks=None, n=4)  # fmt: skip
    assert results.settings["eot_samples"] == EOT_SAMPLES


def test_progress_lines_are_printed_without_a_terminal(capsys: pytest.CaptureFixture) -> None:
    from bindguard.cli.terminal import progress_lines

    with progress_lines(interval=0.05) as progress:
        progress("image linf eps=4/255", 1, 5)
        time.sleep(0.18)  # no update for a while: the timer still reports
    lines = [line for line in capsys.readouterr().err.splitlines() if "image linf eps=4/255: 1/5" in line]
    assert len(lines) >= 3, lines


def test_cli_logs_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", "--out", str(tmp_path), "--modalities", "image", "--n", "4"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "image: 4/4" in result.output  # CliRunner mixes stderr into output


def test_calibration_rows_follow_the_canonical_modality_order(tmp_path: Path, tinybind) -> None:
    calibrated = bindguard.calibrate(tinybind, "builtin", modalities="depth,video", limit=8, method="head",
                                     mode="static", epochs=1, attack_steps=1, batch_size=8, out=tmp_path)  # fmt: skip
    loaded = bindguard.create_encoder("tinybind", calibration=tmp_path)  # read back from config.json
    for model in (calibrated, loaded):
        after = bindguard.evaluate_calibration(model, "builtin", n=4, steps=2, square_queries=0, checks=False)
        assert [row.modality for row in after.calibration] == ["video", "depth"]
