"""Events as the seventh modality: the synthesised split, TinyBind's event head and how it is bound.

The event head is bound after the other parts, so the shipped trained-parts file, and every
calibration made for it, is the one that existed before events; these tests hold that down.
"""

from __future__ import annotations

import json

import pytest
import torch

from bindguard._types import Modality
from bindguard.data.builtin import render
from bindguard.data.builtin.benchmark import _glyphs, load_builtin
from bindguard.encoders import create_encoder
from bindguard.encoders.calibrated import shipped_calibration
from bindguard.encoders.centers import semantic_centers
from bindguard.encoders.tinybind import TinyBind, shipped_weights_path
from bindguard.errors import ConfigError, DataError
from bindguard.training.tinybind import TrainRecipe, bind_event_file, train_tinybind


def test_events_mark_the_moving_glyph_edges_and_are_reproducible() -> None:
    glyphs = _glyphs()[0][:16]
    first = render.render_events(glyphs, 5, torch.Generator().manual_seed(1))
    again = render.render_events(glyphs, 5, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert first.shape == (16, render.EVENT_BINS, 2, render.CANVAS, render.CANVAS)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    # events gather where the glyph is (its coverage swept along the path), not uniformly
    coverage = render.place_glyphs(glyphs, 5, jitter=1.0).squeeze(1) > 0.2
    activity = first.sum((1, 2))
    on_glyph = float(activity[coverage].mean())
    off_glyph = float(activity[~coverage].mean())
    assert on_glyph > 3 * off_glyph
    assert float((first[:, :, 0] > 0).float().mean()) > 0.02 and float((first[:, :, 1] > 0).float().mean()) > 0.02


def test_background_activity_alone_fires_at_its_rate() -> None:
    blank = torch.zeros(64, 8, 8)  # no glyph, so nothing moves: every event is background activity
    counts = render.render_events(blank, 1, torch.Generator().manual_seed(0))
    nonzero = float((counts > 0).float().mean())
    expected = 1 - torch.exp(torch.tensor(-render.BACKGROUND_RATE))  # P(Poisson > 0)
    assert abs(nonzero - float(expected)) < 0.002


def test_tinybind_embeds_events_from_the_shipped_head() -> None:
    encoder = create_encoder("tinybind")
    assert Modality.EVENT in encoder.modalities
    assert encoder.input_spec(Modality.EVENT).shape == (4, 2, 32, 32)
    assert encoder.identity.startswith("tinybind@") and "+event@" in encoder.identity


def test_event_clean_zero_shot_accuracy_is_at_least_90_percent() -> None:
    """The whole held-out split (359 recordings)."""
    encoder = create_encoder("tinybind")
    test = load_builtin(split="test", modalities=[Modality.EVENT])
    data = test.data[Modality.EVENT]
    centers = semantic_centers(encoder, test.class_names, test.templates[Modality.EVENT])
    with torch.no_grad():
        predictions = (encoder.encode_modality(Modality.EVENT, data.inputs) @ centers.T).argmax(1)
    assert float((predictions == data.labels).float().mean()) >= 0.90


def test_the_shipped_calibration_still_names_the_unchanged_trained_parts() -> None:
    """Binding events left tinybind.safetensors as it was: its calibrations of the other six still load."""
    encoder = create_encoder("tinybind")
    recorded = json.loads((shipped_calibration(encoder) / "config.json").read_text())["encoder"]
    six = [m for m in encoder.modalities if m not in (Modality.EVENT, Modality.TEXT)]
    assert encoder.identity_for(six) == recorded.partition("+event@")[0]
    assert encoder.identity_for(six) == "tinybind@" + _file_hash(shipped_weights_path())
    assert encoder.identity_for([*six, Modality.EVENT]) == encoder.identity


def _file_hash(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def trained_without_events(tmp_path_factory):
    """Tiny trained parts written without an event head, as files from before events were."""
    model = train_tinybind(TrainRecipe(epochs=1, variants=1, event_variants=1, limit=64))
    path = tmp_path_factory.mktemp("weights") / "tinybind.safetensors"
    model.save_trained(path, recipe=model.recipe)
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("heads.event.")}
    metadata = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])["__metadata__"]
    save_file(state, str(path), metadata=metadata)
    return path, model


def test_parts_without_an_event_head_load_and_offer_no_event(trained_without_events) -> None:
    path, _ = trained_without_events
    encoder = create_encoder("tinybind", weights=path)
    assert Modality.EVENT not in encoder.modalities
    assert "event" not in encoder.heads
    assert "+event@" not in encoder.identity


def test_binding_an_event_head_is_deterministic_and_changes_nothing_else(trained_without_events, tmp_path) -> None:
    path, model = trained_without_events
    recipe = TrainRecipe(epochs=1, variants=1, event_variants=1, limit=64)
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    bind_event_file(path, first, recipe)
    bind_event_file(path, second, recipe)
    from safetensors.torch import load_file

    one, two = load_file(str(first)), load_file(str(second))  # the metadata differs: it records the seconds taken
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    bound = create_encoder("tinybind", weights=path, event_weights=first)
    plain = create_encoder("tinybind", weights=path)
    assert Modality.EVENT in bound.modalities
    six = [m for m in plain.modalities if m is not Modality.TEXT]
    assert bound.identity_for(six) == plain.identity
    for name, tensor in plain.trained_state().items():
        assert torch.equal(bound.trained_state()[name], tensor), name
    # the head bound from a file equals the one training binds (same recipe and data, in half precision)
    trained = model.trained_state()
    for name, tensor in bound.trained_state().items():
        if name.startswith("heads.event."):
            assert torch.allclose(tensor, trained[name].half().float(), atol=1e-2), name


def test_event_weights_on_parts_that_hold_one_are_refused(trained_without_events, tmp_path) -> None:
    path, model = trained_without_events
    full = tmp_path / "full.safetensors"
    model.save_trained(full, recipe=model.recipe)
    with pytest.raises(ConfigError, match="already hold an event head"):
        create_encoder("tinybind", weights=full, event_weights=full)
    with pytest.raises(ConfigError, match="already hold an event head"):
        bind_event_file(full, tmp_path / "event.safetensors", TrainRecipe(epochs=1, variants=1, limit=16))


def test_a_file_that_is_not_an_event_head_is_named(trained_without_events) -> None:
    path, _ = trained_without_events
    model = TinyBind()
    model.load_trained(path)
    with pytest.raises(DataError, match="not a TinyBind event-head file"):
        model.load_event_tower(path)


def test_a_calibration_folder_grows_by_the_event_modality_and_keeps_the_others(
    trained_without_events, tmp_path
) -> None:
    """A folder calibrated on parts without events takes an event module once a head is bound, unchanged otherwise."""
    from bindguard.pipeline.calibrate_job import calibrate
    from bindguard.training.recipe import CalibrationRecipe

    path, _ = trained_without_events
    head = tmp_path / "event.safetensors"
    bind_event_file(path, head, TrainRecipe(epochs=1, variants=1, event_variants=1, limit=64))
    six = create_encoder("tinybind", weights=path)
    seven = create_encoder("tinybind", weights=path, event_weights=head)
    recipe = CalibrationRecipe(name="tiny", epochs=1, batch_size=8, attack_steps=1)
    folder = tmp_path / "calibration"
    first = calibrate(six, "builtin", recipe=recipe, modalities="image", limit=8, out=folder)
    image = {k: v.clone() for k, v in first.calibrations["image"].state_dict().items()}
    assert json.loads((folder / "config.json").read_text())["encoder"] == six.identity
    calibrate(seven, "builtin", recipe=recipe, modalities="event", limit=8, out=folder)
    header = json.loads((folder / "config.json").read_text())
    assert header["encoder"] == seven.identity and sorted(header["modalities"]) == ["event", "image"]
    loaded = create_encoder("tinybind", weights=path, event_weights=head, calibration=folder)
    assert all(torch.equal(loaded.calibrations["image"].state_dict()[k], v) for k, v in image.items())
    with pytest.raises(DataError, match="other weights than the loaded"):
        other = tmp_path / "other-event.safetensors"
        bind_event_file(path, other, TrainRecipe(seed=5, epochs=1, variants=1, event_variants=1, limit=64))
        create_encoder("tinybind", weights=path, event_weights=other, calibration=folder)
