"""`bindguard report DIR`: files written whole, tables right, bad input refused, and the page renders in Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from bindguard.cli.main import app

pytest.importorskip("matplotlib", reason="reports draw with matplotlib (pip install 'bindguard[plots]')")

runner = CliRunner()
MODALITIES = ("image", "video", "audio", "point", "depth", "thermal")
RANGES = {"audio": 2.0, "point": 2.0}  # input range width; the others live in [0, 1]
STAGES = ("apgd-ce", "apgd-t", "rank", "embed", "square")
MODEL = "tiny<bind>&co"  # markup in a name must come out escaped


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _clean_rows(modality: str) -> list[dict]:
    return [
        {"modality": modality, "task": "zero-shot", "top1": 0.95, "top5": 1.0, "top1_ci95": [0.84, 0.99], "n": 60,
         "attack": "none", "eps": 0.0},
        {"modality": modality, "task": "retrieval", "query": "text", "gallery": modality, "recall@1": 0.8,
         "recall@5": 0.9, "recall@10": 1.0, "n": 10, "attack": "none", "eps": 0.0},
        {"modality": modality, "task": "retrieval", "query": modality, "gallery": "text", "recall@1": 0.95,
         "recall@5": 1.0, "recall@10": 1.0, "n": 60, "attack": "none", "eps": 0.0},
    ]  # fmt: skip


def _robust_row(modality: str, eps: float, top1: float) -> dict:
    after = {stage: min(1.0, top1 + 0.1 * (len(STAGES) - 1 - index)) for index, stage in enumerate(STAGES)}
    after["square"] = top1
    flags = ["rises-with-eps"] if (modality, round(eps * 255)) == ("audio", 2) else []
    return {
        "modality": modality, "task": "zero-shot", "attack": "standard", "attacks": list(STAGES), "norm": "linf",
        "eps": eps, "eps_abs": eps * RANGES.get(modality, 1.0), "steps": 10, "square_queries": 100,
        "adaptive": True, "n": 60, "clean_top1": 0.95, "clean_top5": 1.0, "top1": top1, "top5": min(1.0, top1 + 0.3),
        "top1_ci95": [max(0.0, top1 - 0.1), min(1.0, top1 + 0.12)], "recall@1": top1, "recall@5": top1 + 0.3,
        "max_norm": eps * RANGES.get(modality, 1.0), "after": after, "square": {"broken": 0, "queries": 100},
        "flags": flags, "checks": {"deterministic": True, "zero_gradient_fraction": 0.0},
    }  # fmt: skip


def _calibration_row(modality: str) -> dict:
    return {
        "modality": modality, "task": "calibration", "method": "purifier", "objective": "ce", "mode": "adaptive",
        "norm": "linf", "eps": 4 / 255, "eps_abs": 4 / 255 * RANGES.get(modality, 1.0), "steps": 10,
        "square_queries": 100, "n": 60, "attack": "standard",
        "before": {"clean_top1": 0.95, "clean_top5": 1.0, "robust_top1": 0.02, "robust_top5": 0.3},
        "after": {"clean_top1": 0.9, "clean_top5": 1.0, "transfer_top1": 0.7, "transfer_top5": 0.9,
                  "robust_top1": 0.25, "robust_top5": 0.6},
        "trainable_parameters": 12345, "trainable_fraction": 0.0005, "train_seconds": 80.1, "flags": [],
    }  # fmt: skip


def _rows() -> list[dict]:
    rows = [row for modality in MODALITIES for row in _clean_rows(modality)]
    rows += [
        {"modality": "image", "task": "retrieval", "query": "image", "gallery": "depth", "level": "instance",
         "chance_recall1": 1 / 60, "recall@1": 0.9, "recall@5": 1.0, "recall@10": 1.0, "n": 60, "attack": "none",
         "eps": 0.0},
        {"modality": "depth", "task": "retrieval", "query": "depth", "gallery": "image", "level": "instance",
         "chance_recall1": 1 / 60, "recall@1": 0.85, "recall@5": 1.0, "recall@10": 1.0, "n": 60, "attack": "none",
         "eps": 0.0},
    ]  # fmt: skip
    rows += [
        _robust_row(modality, k / 255, top1) for modality in MODALITIES for k, top1 in ((1, 0.5), (2, 0.2), (4, 0.0))
    ]
    rows += [_calibration_row(modality) for modality in MODALITIES]
    return rows


EXAMPLE_SHAPES = {
    "image": (3, 3, 32, 32),
    "depth": (3, 1, 32, 32),
    "thermal": (3, 1, 32, 32),
    "video": (2, 4, 3, 32, 32),
    "audio": (2, 16000),
    "point": (2, 256, 3),
}


def _write_example(folder: Path, modality: str, generator: np.random.Generator) -> None:
    shape = EXAMPLE_SHAPES[modality]
    eps = 4 / 255 * RANGES.get(modality, 1.0)
    if modality == "audio":
        time = np.arange(shape[1]) / 16000
        clean = (0.5 * np.sin(2 * np.pi * 440 * time) * np.ones((shape[0], 1))).astype(np.float32)
    elif modality == "point":
        clean = generator.normal(size=shape).astype(np.float32)
        clean /= np.linalg.norm(clean, axis=-1, keepdims=True).max() * 1.1
    else:
        clean = generator.uniform(0.1, 0.9, size=shape).astype(np.float32)
    adversarial = clean + generator.choice([-eps, eps], size=shape).astype(np.float32)
    count = shape[0]
    tensors = {
        "clean": clean,
        "adversarial": adversarial,
        "labels": np.arange(count, dtype=np.int64),
        "clean_prediction": np.arange(count, dtype=np.int64),
        "adversarial_prediction": (np.arange(count, dtype=np.int64) + 1) % 10,
        "norms": np.full(count, eps, dtype=np.float32),
    }
    metadata = {"modality": modality, "attack": "apgd-ce", "eps": str(4 / 255), "eps_abs": str(eps), "norm": "linf"}
    save_file(tensors, str(folder / f"adversarial-{modality}.safetensors"), metadata=metadata)


def write_run(directory: Path, *, examples: bool = True) -> Path:
    directory.mkdir(parents=True)
    results = {
        "schema_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "model": MODEL,
        "data": "builtin",
        "seed": 0,
        "versions": {"bindguard": "0.1.0", "numpy": np.__version__},
        "settings": {"robust": {"ensemble": "standard", "steps": 10, "checks": True}, "n": 60},
        "rows": _rows(),
    }
    (directory / "results.json").write_text(json.dumps(results))
    if examples:
        (directory / "examples").mkdir()
        generator = np.random.default_rng(0)
        for modality in MODALITIES:
            _write_example(directory / "examples", modality, generator)
    return directory


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full report, drawn once for the module (drawing is the slow part)."""
    directory = write_run(tmp_path_factory.mktemp("report") / "run")
    result = invoke("report", str(directory), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["report"] == str(directory / "report.html")
    assert {Path(path).name for path in printed["files"]} >= {"report.html", "results.csv", "results.md"}
    return directory


def test_report_writes_every_file_whole(report_dir: Path) -> None:
    for name in ("report.html", "results.csv", "results.md"):
        assert (report_dir / name).stat().st_size > 0
    plots = sorted(path.name for path in (report_dir / "plots").glob("*.png"))
    assert plots == sorted(
        ["robust-linf.png", "calibration-purifier-ce-adaptive-linf-4-255.png"]
        + [f"example-{modality}.png" for modality in MODALITIES]
    )
    for name in plots:
        assert (report_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [path for path in report_dir.rglob("*") if path.name.endswith(".partial")]


def test_csv_has_every_row_with_nested_fields_as_columns(report_dir: Path) -> None:
    table = list(csv.DictReader(io.StringIO((report_dir / "results.csv").read_text())))
    assert len(table) == len(_rows())
    robust = [row for row in table if row["attack"] == "standard" and row["task"] == "zero-shot"]
    assert len(robust) == 3 * len(MODALITIES)
    flagged = next(row for row in robust if row["modality"] == "audio" and row["flags"])
    assert flagged["flags"] == "rises-with-eps"
    assert float(flagged["eps_abs"]) == pytest.approx(2 * float(flagged["eps"]))
    assert {"after.apgd-ce", "after.square", "top1_ci95_low", "top1_ci95_high", "square.broken"} <= set(table[0])
    calibration = [row for row in table if row["task"] == "calibration"]
    assert float(calibration[0]["before.robust_top1"]) == pytest.approx(0.02)
    assert float(calibration[0]["after.transfer_top1"]) == pytest.approx(0.7)


def test_markdown_tables(report_dir: Path) -> None:
    text = (report_dir / "results.md").read_text()
    for heading in ("## Clean accuracy", "## Under attack", "## Calibration before and after"):
        assert heading in text
    assert "| image | 60 | 95.0 | 84.0–99.0 | 100.0 | 80.0 / 90.0 / 100.0 | 95.0 / 100.0 / 100.0 |" in text
    assert "| audio | 2/255 (0.0157) | 60 | 95.0 → 20.0 |" in text  # relative and absolute budget
    assert "⚠ rises-with-eps" in text
    assert (
        "| image | 4/255 (0.0157) | 60 | 95.0 → 90.0 | 70.0 | 2.0 → 25.0 | 30.0 → 60.0 | – | 12,345 (0.05%) | 80 | ok |"
        in text
    )
    assert "All rows: attack: standard; mode: adaptive; norm: linf; steps: 10; Square queries: 100." in text


def test_html_is_self_contained_escaped_and_flags_rows(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert "tiny&lt;bind&gt;&amp;co" in page and MODEL not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "the report references something outside itself"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 + len(MODALITIES)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert page.count('<tr class="flagged">') == 1
    assert "rises-with-eps</b>: robust accuracy grows with the budget" in page
    assert page.count("data:audio/wav;base64,") == 2  # clean and adversarial players


def test_report_without_examples_or_attacks(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "clean", examples=False)
    results = json.loads((directory / "results.json").read_text())
    results["rows"] = [row for row in results["rows"] if row.get("attack") == "none"]
    (directory / "results.json").write_text(json.dumps(results))
    result = invoke("report", str(directory), "--quiet")
    assert result.exit_code == 0, result.output
    assert "report: file://" in result.stdout
    page = (directory / "report.html").read_text()
    assert "Clean accuracy" in page and "Under attack" not in page
    assert "No sanity flags were raised" in page


def _corrupt_json(directory: Path) -> None:
    (directory / "results.json").write_text('{"schema_version": 1, "rows": [')


def _wrong_schema(directory: Path) -> None:
    (directory / "results.json").write_text(json.dumps({"schema_version": 99, "rows": []}))


def _row_without_fields(directory: Path) -> None:
    results = json.loads((directory / "results.json").read_text())
    del results["rows"][-1]["before"]
    (directory / "results.json").write_text(json.dumps(results))


def _corrupt_example(directory: Path) -> None:
    (directory / "examples" / "adversarial-image.safetensors").write_bytes(b"not a safetensors file")


def _wrong_layout(directory: Path) -> None:
    save_file(
        {"clean": np.zeros((2, 3, 8), np.float32), "adversarial": np.zeros((2, 3, 8), np.float32)},
        str(directory / "examples" / "adversarial-point.safetensors"),
        metadata={"modality": "point"},
    )


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_corrupt_json, "unreadable or corrupt"),
        (_wrong_schema, "not a bindguard results file"),
        (_row_without_fields, "lacks before"),
        (_corrupt_example, "adversarial-image.safetensors is unreadable or corrupt"),
        (_wrong_layout, "point tensors must both have layout (B, ·, 3)"),
    ],
)
def test_bad_results_give_one_line_exit_2_and_write_nothing(tmp_path: Path, spoil, message: str) -> None:
    directory = write_run(tmp_path / "run")
    spoil(directory)
    before = sorted(path.relative_to(directory) for path in directory.rglob("*"))
    result = invoke("report", str(directory), "--quiet")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, result.output
    assert sorted(path.relative_to(directory) for path in directory.rglob("*")) == before


def _results_file(root: Path) -> Path:
    (root / "results.json").write_text("{}")
    return root / "results.json"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no results folder at"),
        (lambda root: root, "no results file at"),
        (_results_file, "is not a folder"),
    ],
)
def test_missing_or_wrong_folder_exits_2(tmp_path: Path, make, message: str) -> None:
    result = invoke("report", str(make(tmp_path)), "--quiet")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "report.html").exists()


def test_import_stays_light() -> None:
    code = "import sys, bindguard.reports, bindguard.cli.report; print([m for m in ('matplotlib', 'torch') if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_log_mel_matches_the_encoders_front_end() -> None:
    import torch

    from bindguard.encoders.logmel import LogMel
    from bindguard.reports.spectrogram import log_mel

    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    expected = LogMel(sample_rate=16000)(torch.from_numpy(waveform)[None])[0].numpy()
    np.testing.assert_allclose(log_mel(waveform, 16000), expected, atol=1e-3)


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_chromium
def test_chromium_renders_the_report_without_console_errors(report_dir: Path) -> None:
    url = (report_dir / "report.html").resolve().as_uri()
    loaded = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    # The page runs no script, so any console message is an error: a blocked fetch, a parse failure.
    console = [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    dom = loaded.stdout
    for anchor in ("table-clean-accuracy", "table-under-attack", "table-calibration-before-and-after"):
        assert f'id="{anchor}"' in dom
    assert dom.count("<img") == 2 + len(MODALITIES) and 'class="flagged"' in dom


@needs_chromium
def test_chromium_screenshot(report_dir: Path) -> None:
    shot = report_dir / "screenshot.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", (report_dir / "report.html").as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"


def test_report_shows_how_the_run_was_made(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "made", examples=False)
    results = json.loads((directory / "results.json").read_text())
    results["provenance"] = {
        "command": "bindguard eval --out made --seed 3",
        "seed": 3,
        "versions": {"torch": "2.13.0"},
        "data": {"name": "builtin", "fingerprints": {"image": "0123abcd"}},
    }
    (directory / "results.json").write_text(json.dumps(results))
    assert invoke("report", str(directory), "--quiet").exit_code == 0
    page = (directory / "report.html").read_text()
    assert "<dt>provenance.command</dt><dd>bindguard eval --out made --seed 3</dd>" in page
    assert "<dt>provenance.data.fingerprints.image</dt><dd>0123abcd</dd>" in page
    assert "provenance.versions" not in page  # versions are shown once, above
