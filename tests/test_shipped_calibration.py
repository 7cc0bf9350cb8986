"""The calibration that ships with TinyBind: it loads by name, it is what its recipe file says, it
was trained on the built-in train split, and it stays under 1% of the encoder's parameters."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from typer.testing import CliRunner

from bindguard._types import PERCEPTUAL_MODALITIES, Modality
from bindguard.cli.main import app
from bindguard.data.rows import fingerprint_rows
from bindguard.encoders import create_encoder
from bindguard.encoders.calibrated import CalibratedEncoder, calibrate_encoder, shipped_calibration
from bindguard.errors import DataError
from bindguard.training.recipe import load_recipe


@pytest.fixture(scope="module")
def shipped():
    return create_encoder("tinybind", calibration="shipped")


def test_the_shipped_calibration_covers_all_six_modalities_under_one_percent(shipped) -> None:
    assert isinstance(shipped, CalibratedEncoder)
    assert set(shipped.calibrations) == {m.value for m in PERCEPTUAL_MODALITIES}
    total = shipped.base.num_parameters()
    for calibration in shipped.calibrations.values():
        assert 0 < calibration.trainable_parameters() < 0.01 * total
    assert shipped.source == shipped_calibration(shipped.base)


def test_the_shipped_calibration_is_its_recipe_file_on_the_full_train_split(shipped) -> None:
    from bindguard.data import load_dataset

    train = load_dataset("builtin", split="train")
    for name, calibration in shipped.calibrations.items():
        recorded = calibration.config.recipe
        recipe = load_recipe(recorded["name"]).with_settings(seed=recorded["seed"]).for_modality(Modality(name))
        assert {k: recorded[k] for k in asdict(recipe)} == asdict(recipe), name
        assert recorded["n"] == len(train.data[Modality(name)])
    audio = train.data[Modality.AUDIO]  # decoded from the shipped recordings: the same bytes on every CPU
    assert shipped.calibrations["audio"].config.recipe["data"] == fingerprint_rows(audio.inputs, audio.labels)


def test_the_shipped_calibration_was_trained_on_the_glyph_splits_as_this_cpu_renders_them(shipped) -> None:
    """The rendered modalities are float math (poses, trigonometry, resizing): another instruction set
    rounds some values differently (up to 5e-7 on images, and a flipped event where a log-intensity
    change sits at the threshold), so their fingerprints hold only on the kind of CPU that recorded them."""
    from bindguard.data import load_dataset

    train = load_dataset("builtin", split="train")
    rendered = {m.value: fingerprint_rows(d.inputs, d.labels) for m, d in train.data.items()}
    recorded = {name: c.config.recipe["data"] for name, c in shipped.calibrations.items()}
    if rendered["image"] != recorded["image"]:
        pytest.skip("this CPU renders the built-in glyphs with other float rounding than the one that trained it")
    assert rendered == recorded | {m: rendered[m] for m in rendered if m not in recorded}


def test_shipped_is_refused_for_an_encoder_without_one(shipped) -> None:
    from second_encoder import SecondEncoder

    with pytest.raises(DataError, match="no calibration ships for"):
        calibrate_encoder(SecondEncoder(0), "shipped")


def test_the_cli_takes_calibration_shipped(tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--calibration",
            "shipped",
            "--modalities",
            "point",
            "--n",
            "4",
            "--attacks",
            "fgsm",
            "--no-checks",
            "--square-queries",
            "0",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "calibration@" in (tmp_path / "run" / "results.json").read_text()


def test_the_recipe_shown_in_results_gives_each_modality_the_phases_it_trained(shipped) -> None:
    from bindguard.pipeline.calibrate_job import shown_recipes

    shown = shown_recipes({name: c.config.recipe for name, c in shipped.calibrations.items()})
    for name, calibration in shipped.calibrations.items():
        phases = shown.get("modalities", {}).get(name, {}).get("phases", shown["phases"])
        assert phases == calibration.config.recipe["phases"], name
    recipe = load_recipe("calmars")
    assert set(shown["modalities"]) == set(recipe.modalities)  # only the modalities the recipe overrides
    # a flat setting shows where a phase inherits it, and not where every phase sets its own
    for name, calibration in shipped.calibrations.items():
        trained = calibration.config.recipe
        inherited = shown | shown.get("modalities", {}).get(name, {})
        for field in ("learning_rate", "reg", "mode", "epochs", "eps"):
            if all(field in phase for phase in trained["phases"]):
                assert field not in inherited, (name, field)
            else:
                assert inherited[field] == trained[field], (name, field)
    assert shown["modalities"]["point"]["learning_rate"] == 0.001  # point's phase trains at its own rate
