"""Reading upstream checkpoints (every format, prefixes, nesting), strict key checks, conversion, and its command."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bindguard.cli.convert import convert_command
from bindguard.encoders.checkpoints import check_keys, convert_to_safetensors, read_state_dict
from bindguard.errors import DataError


def _state() -> OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return OrderedDict(
        [
            ("trunk.weight", torch.randn(4, 3, generator=generator)),
            ("trunk.bias", torch.randn(4, generator=generator)),
            ("head.weight", torch.randn(2, 4, generator=generator).half()),
            ("steps", torch.tensor(7)),
        ]
    )


def _same(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    """Same names (in any order: safetensors sorts them), dtypes and values."""
    return sorted(found) == sorted(expected) and all(
        found[key].dtype == value.dtype and torch.equal(found[key], value) for key, value in expected.items()
    )


def _save(path: Path, value: object, how: str) -> Path:
    if how == "zip":
        torch.save(value, path)
    elif how == "legacy":
        torch.save(value, path, _use_new_zipfile_serialization=False)
    elif how == "pickle":
        path.write_bytes(pickle.dumps(value))
    else:
        save_file(value, str(path))
    return path


@pytest.mark.parametrize(
    ("how", "name"),
    [
        ("zip", "model.pth"),
        ("zip", "pytorch_model.bin"),
        ("legacy", "model.pt"),
        ("pickle", "centres.pth"),
        ("safetensors", "model.safetensors"),
    ],
)
def test_each_format_reads_as_the_same_state_dict(tmp_path: Path, how: str, name: str) -> None:
    assert _same(read_state_dict(_save(tmp_path / name, _state(), how)), _state())


@pytest.mark.parametrize(("how", "mmap"), [("zip", [True]), ("legacy", [True, False])])
def test_torch_files_are_memory_mapped_where_the_format_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, mmap: list[bool]
) -> None:
    calls: list[dict[str, object]] = []
    load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert _same(read_state_dict(_save(tmp_path / "model.pth", _state(), how)), _state())
    assert [call.get("mmap", False) for call in calls] == mmap
    assert all(call["weights_only"] is True and call["map_location"] == "cpu" for call in calls)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module"])
def test_nested_checkpoints_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    checkpoint = {"epoch": 3, "optimizer_name": "adamw", wrapper: _state()}
    assert _same(read_state_dict(_save(tmp_path / "ckpt.pth", checkpoint, "zip")), _state())


def test_doubly_nested_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    checkpoint = {"model": {"state_dict": _state(), "version": 2}, "epoch": 1}
    assert _same(read_state_dict(_save(tmp_path / "ckpt.pth", checkpoint, "zip")), _state())


def test_ddp_prefix_and_unibind_prefix_are_stripped(tmp_path: Path) -> None:
    state = {f"module.backbone.bind.{key}": value for key, value in _state().items()}
    state["module.mlp_for_image.weight"] = torch.ones(2, 2)
    tensors = read_state_dict(_save(tmp_path / "unibind.pth", state, "zip"))
    assert list(tensors) == [*_state(), "mlp_for_image.weight"]


def test_strip_prefixes_can_be_chosen_or_turned_off(tmp_path: Path) -> None:
    path = _save(tmp_path / "model.pth", {"backbone.bind.a": torch.ones(1), "encoder.b": torch.ones(1)}, "zip")
    assert list(read_state_dict(path, strip_prefixes=())) == ["backbone.bind.a", "encoder.b"]
    assert list(read_state_dict(path, strip_prefixes=("encoder.",))) == ["backbone.bind.a", "b"]
    assert list(read_state_dict(path, strip_prefixes=("backbone.bind.", "encoder."))) == ["a", "b"]


def test_a_partial_module_prefix_is_kept(tmp_path: Path) -> None:
    path = _save(tmp_path / "model.pth", {"module.a": torch.ones(1), "b": torch.ones(1)}, "zip")
    assert list(read_state_dict(path)) == ["module.a", "b"]


def test_keys_that_collide_after_stripping_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "model.pth", {"backbone.bind.a": torch.ones(1), "a": torch.zeros(1)}, "zip")
    with pytest.raises(DataError, match="'backbone.bind.a' and 'a' both become 'a'"):
        read_state_dict(path)


def test_folder_with_one_weights_file_is_read(tmp_path: Path) -> None:
    _save(tmp_path / "pytorch_model.bin", _state(), "zip")
    (tmp_path / "config.json").write_text("{}")
    assert _same(read_state_dict(tmp_path), _state())
    save_file({"only": torch.ones(1)}, str(tmp_path / "model.safetensors"))  # safetensors wins over torch.save
    assert list(read_state_dict(tmp_path)) == ["only"]


def test_folders_without_exactly_one_weights_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no weights file; expected one of .safetensors, .pth"):
        read_state_dict(tmp_path)
    save_file({"a": torch.ones(1)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.ones(1)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    with pytest.raises(DataError, match="holds 2 weights files .*pass the one to read"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("how", ["safetensors", "zip"])
def test_sharded_folder_is_read_through_its_index(tmp_path: Path, how: str) -> None:
    state = dict(_state())
    suffix = "safetensors" if how == "safetensors" else "bin"
    names = [f"model-0000{index}-of-00002.{suffix}" for index in (1, 2)]
    keys = list(state)
    _save(tmp_path / names[0], {key: state[key] for key in keys[:2]}, how)
    _save(tmp_path / names[1], {key: state[key] for key in keys[2:]}, how)
    weight_map = {key: names[0] if position < 2 else names[1] for position, key in enumerate(keys)}
    index = tmp_path / f"model.{suffix}.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert _same(read_state_dict(tmp_path), state)
    index.write_text(json.dumps({"weight_map": {**weight_map, "lost.weight": names[0]}}))
    with pytest.raises(DataError, match="1 keys of the weight_map are in no shard"):
        read_state_dict(tmp_path)
    index.write_text(json.dumps({"weight_map": {**weight_map, "other": "../elsewhere.bin"}}))
    with pytest.raises(DataError, match="shards must be files beside the index"):
        read_state_dict(tmp_path)
    (tmp_path / names[1]).unlink()
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(DataError, match="which is missing"):
        read_state_dict(tmp_path)


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
def test_checkpoint_with_a_payload_is_refused_before_it_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "payload-ran"
    path = _save(tmp_path / "model.pth", {"weight": torch.ones(2), "hook": _Shell(marker)}, how)
    with pytest.raises(DataError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert f"needs more than tensors (it asks for {os.system.__module__}.system)" in message
    assert "convert it with the upstream code to a plain state dict or safetensors" in message
    assert "\n" not in message and not marker.exists()


def test_pickled_module_is_refused_naming_its_class(tmp_path: Path) -> None:
    path = _save(tmp_path / "model.pth", torch.nn.Linear(2, 2), "zip")
    with pytest.raises(DataError, match=r"needs more than tensors \(it asks for torch.nn.modules.linear.Linear\)"):
        read_state_dict(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(DataError, match=r"needs more than tensors \(it asks for TorchScript code"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.pth", {"weight": torch.ones(1), "epoch": 3}, "entry 'epoch' is a int, not a named tensor"),
        ("model.pth", [torch.ones(1)], "holds a list, not a state dict"),
        ("model.pth", {}, "holds no tensors"),
        ("model.ckpt", {"weight": torch.ones(1)}, "unknown checkpoint format '.ckpt'; allowed: .safetensors"),
    ],
)
def test_contents_that_are_not_a_state_dict_are_refused(
    tmp_path: Path, name: str, content: object, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        read_state_dict(_save(tmp_path / name, content, "zip"))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("model.pth", b"", "not a readable"),
        ("model.pth", b"junk that is no pickle", "not a readable"),
        ("model.pth", b"PK\x03\x04 a broken zip", "not a readable"),
        ("model.safetensors", b"junk", "not a readable safetensors file"),
    ],
)
def test_damaged_files_fail_with_one_line(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=message) as caught:
        read_state_dict(tmp_path / name)
    assert "\n" not in str(caught.value)


def test_a_missing_checkpoint_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.pth")


# ---------------------------------------------------------------- strict keys


def test_check_keys_passes_an_exact_fit() -> None:
    check_keys(_state(), _state(), "model.pth")


def test_check_keys_names_the_first_missing_unexpected_and_misshapen_keys() -> None:
    found = dict(_state())
    del found["trunk.bias"]
    found["extra.weight"] = torch.ones(1)
    found["head.weight"] = torch.ones(4, 2)
    with pytest.raises(DataError) as caught:
        check_keys(_state(), found, "model.pth")
    message = str(caught.value)
    assert message.startswith("model.pth does not fit the model, keys: 1 missing (first 'trunk.bias')")
    assert "1 unexpected (first 'extra.weight')" in message
    assert "1 with the wrong shape (first 'head.weight': (4, 2) in the file, (2, 4) expected)" in message
    assert "fix: check that the checkpoint is for this model and size" in message


def test_check_keys_suggests_the_prefix_to_strip() -> None:
    found = {f"model.visual.{key}": value for key, value in _state().items()}
    with pytest.raises(DataError, match="fix: strip the prefix 'model.visual.'"):
        check_keys(_state(), found, "model.pth")


# ---------------------------------------------------------------- conversion


def test_convert_round_trip_with_tied_weights_views_and_prefixes(tmp_path: Path) -> None:
    shared = torch.randn(3, 4)
    state = {
        "backbone.bind.embed.weight": shared,
        "backbone.bind.head.weight": shared,  # tied weights share memory: safetensors needs copies
        "backbone.bind.column": shared[:, 1],  # a strided view
        "mlp_for_audio.bias": torch.zeros(4),
    }
    source = _save(tmp_path / "unibind.pth", state, "zip")
    converted = convert_to_safetensors(source, tmp_path / "out" / "model.safetensors")
    assert converted.path == tmp_path / "out" / "model.safetensors"
    assert (converted.tensors, converted.parameters) == (4, 12 + 12 + 3 + 4)
    written = load_file(str(converted.path))
    assert list(written) == sorted(["embed.weight", "head.weight", "column", "mlp_for_audio.bias"]) or set(written) == {
        "embed.weight",
        "head.weight",
        "column",
        "mlp_for_audio.bias",
    }
    assert torch.equal(written["embed.weight"], shared) and torch.equal(written["head.weight"], shared)
    assert torch.equal(written["column"], shared[:, 1])
    assert _same(read_state_dict(converted.path), read_state_dict(source))
    assert [entry.name for entry in (tmp_path / "out").iterdir()] == ["model.safetensors"]  # no temp file left


def test_convert_refuses_non_finite_weights_and_writes_nothing(tmp_path: Path) -> None:
    source = _save(tmp_path / "model.pth", {"good": torch.ones(2), "bad": torch.tensor([1.0, float("nan")])}, "zip")
    with pytest.raises(DataError, match="tensor 'bad' holds NaN or infinite values"):
        convert_to_safetensors(source, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_convert_refuses_other_suffixes_and_overwriting_its_source(tmp_path: Path) -> None:
    source = _save(tmp_path / "model.pth", _state(), "zip")
    with pytest.raises(DataError, match="must end in .safetensors"):
        convert_to_safetensors(source, tmp_path / "model.pt")
    converted = convert_to_safetensors(source, tmp_path / "model.safetensors")
    with pytest.raises(DataError, match="is the checkpoint being converted"):
        convert_to_safetensors(converted.path, converted.path)


# ---------------------------------------------------------------- the command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(convert_command)
    return app


def test_convert_command_prints_one_line(tmp_path: Path) -> None:
    state = {f"backbone.bind.{key}": value for key, value in _state().items()}
    source = _save(tmp_path / "model.pth", state, "zip")
    result = CliRunner().invoke(_app(), [str(source), str(tmp_path / "model.safetensors")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().count("\n") == 0 and "4 tensors, 25 values" in result.stdout
    assert _same(load_file(str(tmp_path / "model.safetensors")), _state())


def test_convert_command_keeps_prefixes_when_told(tmp_path: Path) -> None:
    source = _save(tmp_path / "model.pth", {"backbone.bind.a": torch.ones(1)}, "zip")
    arguments = [str(source), str(tmp_path / "model.safetensors"), "--strip-prefix", ""]
    assert CliRunner().invoke(_app(), arguments, catch_exceptions=False).exit_code == 0
    assert list(load_file(str(tmp_path / "model.safetensors"))) == ["backbone.bind.a"]


def test_convert_command_imports_unibind_centres(tmp_path: Path) -> None:
    (tmp_path / "centres.pkl").write_bytes(pickle.dumps({"cat": torch.ones(5, 8), "dog": -torch.ones(5, 8)}))
    arguments = [str(tmp_path / "centres.pkl"), str(tmp_path / "centres.safetensors"), "--centers"]
    result = CliRunner().invoke(_app(), arguments, catch_exceptions=False)
    assert result.exit_code == 0 and "2 classes x 5 centers of dimension 8" in result.stdout


def test_convert_command_reports_a_refused_checkpoint_as_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    source = _save(tmp_path / "model.pth", {"hook": _Shell(marker)}, "zip")
    result = CliRunner().invoke(_app(), [str(source), str(tmp_path / "model.safetensors")], catch_exceptions=False)
    assert result.exit_code == 2
    assert "needs more than tensors" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not marker.exists() and not (tmp_path / "model.safetensors").exists()
