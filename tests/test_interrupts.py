"""A command killed with SIGKILL at any moment, then run again, ends exactly where an uninterrupted run ends.

Each trial runs the real CLI in a subprocess through a small wrapper that kills its own process
(SIGKILL: no ``finally``, no ``atexit``) at a chosen moment, reruns the same command to the end,
and compares with one uninterrupted reference run per command: the same tensors bit for bit, the
same config or results rows, and no temp, staged or checkpoint file left anywhere under ``--out``.
The moments are picked by patching functions inside the subprocess, so production code carries
no test hooks. Trials run two at a time, in one pass before the tests look at them.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# Small enough for seconds of work per run (most of a run is imports): 2 modalities x 2 epochs x 2
# steps; then 4 attacks + Square on 8 samples, at a budget that leaves samples for the later attacks.
CALIBRATE = shlex.split(
    "calibrate --modalities image,depth --limit 16 --epochs 2 --attack-steps 1 --batch-size 8 "
    "--no-evaluate --seed 0 --quiet"
)
EVALUATE = shlex.split(
    "eval --modalities image --n 8 --attacks standard --steps 5 --square-queries 20 --no-checks --eps 1/255 "
    "--seed 0 --quiet"
)
TIMING_FIELDS = {"train_seconds", "seconds", "created"}
TRAINING = "bindguard.training.calibrate"
STATE_FILE = "image-linf-*.json"

# Runs the CLI with one function patched to SIGKILL the process on its k-th call (before or after
# the call); for "events", on the k-th of every module forward and rename under --out; with k = 0
# it only counts those into the file "count_to".
WRAPPER = r"""
import fnmatch, importlib, json, os, signal, sys
from pathlib import Path

spec = json.loads(sys.argv[1])
calls = 0


def counted(original, when, matches=lambda *args, **kwargs: True):
    def patched(*args, **kwargs):
        global calls
        chosen = matches(*args, **kwargs)
        calls += chosen
        if chosen and when == "before" and calls == spec["call"]:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if chosen and when == "after" and calls == spec["call"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return patched


if spec["target"] == "events":
    import torch

    import bindguard.encoders.centers as centers

    # not the text-center cache's work: a run with a warm cache must count as many events as a cold one
    out = Path(sys.argv[sys.argv.index("--out") + 1]).resolve()
    counting = [True]

    def uncounted(*args, **kwargs):
        counting[0] = False
        try:
            return compute(*args, **kwargs)
        finally:
            counting[0] = True

    compute, centers.compute_semantic_centers = centers.compute_semantic_centers, uncounted
    forward = lambda *args, **kwargs: counting[0]
    under_out = lambda source, target: Path(target).resolve().is_relative_to(out)
    torch.nn.Module.__call__ = counted(torch.nn.Module.__call__, "before", forward)
    os.replace = counted(os.replace, "before", under_out)
    if spec.get("count_to"):
        import atexit

        atexit.register(lambda: Path(spec["count_to"]).write_text(str(calls)))
elif spec["target"] == "os.replace":  # only renames onto a file named like spec["file"]
    named = lambda source, target: fnmatch.fnmatch(Path(target).name, spec["file"])
    os.replace = counted(os.replace, spec["when"], named)
elif spec["target"] != "none":
    module, name = spec["target"].rsplit(".", 1)
    owner = importlib.import_module(module)
    setattr(owner, name, counted(getattr(owner, name), spec["when"]))

from bindguard.cli.main import run

sys.argv = ["bindguard", *sys.argv[2:]]
run()
"""


@dataclass(frozen=True)
class Trial:
    """A command and the moment to kill it; ``kill`` gets the reference run's event count."""

    command: list[str]
    kill: Callable[[int], dict]


@dataclass
class Outcome:
    out: Path
    kill: dict
    killed: subprocess.CompletedProcess
    left: list[str]  # the files under out right after the kill
    finished: subprocess.CompletedProcess | None


Runs = tuple[dict[str, Path], dict[str, Future[Outcome]]]  # references by command, outcomes by test name


def trial(command: list[str], **kill) -> Callable:
    """Mark a test with the trial it checks: kill ``command`` at ``kill`` (target, when, call, file)."""

    def mark(test: Callable) -> Callable:
        test.trial = Trial(command, lambda events: kill)
        return test

    return mark


def random_trial(command: list[str], seed: int) -> Callable:
    """Mark a test with a trial killed at the event (module forward or rename) a seeded draw picks."""

    def mark(test: Callable) -> Callable:
        test.trial = Trial(command, lambda events: {"target": "events", "call": random.Random(seed).randint(1, events)})
        return test

    return mark


def _bindguard(wrapper: Path, out: Path, command: list[str], kill: dict) -> subprocess.CompletedProcess:
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(wrapper), json.dumps(kill), *command, "--out", str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files(out: Path) -> list[str]:
    return sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())


def _reference(wrapper: Path, folder: Path, command: list[str]) -> tuple[Path, int]:
    """An uninterrupted run into ``folder/out``, and how many events it had."""
    count = folder / "events.txt"
    done = _bindguard(wrapper, folder / "out", command, {"target": "events", "call": 0, "count_to": str(count)})
    assert done.returncode == 0, f"the uninterrupted {command[0]} failed:\n{done.stderr[-3000:]}"
    return folder / "out", int(count.read_text())


def _killed_then_finished(wrapper: Path, out: Path, command: list[str], kill: dict) -> Outcome:
    killed = _bindguard(wrapper, out, command, kill)
    left = _files(out) if out.is_dir() else []
    if killed.returncode != -signal.SIGKILL:
        return Outcome(out, kill, killed, left, None)
    return Outcome(out, kill, killed, left, _bindguard(wrapper, out, command, {"target": "none"}))


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wrapper") / "killing_bindguard.py"
    path.write_text(WRAPPER)
    return path


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, wrapper: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Run the references, then every selected trial of this module, two processes at a time."""
    tests = [item.function for item in request.session.items if getattr(item, "module", None) is sys.modules[__name__]]
    trials = {test.__name__: test.trial for test in tests if hasattr(test, "trial")}
    commands = {t.command[0]: t.command for t in trials.values()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {
            name: pool.submit(_reference, wrapper, tmp_path_factory.mktemp(f"reference-{name}"), command)
            for name, command in commands.items()
        }
        references = {name: future.result() for name, future in started.items()}
        outcomes: dict[str, Future[Outcome]] = {}
        for name, planned in trials.items():
            reference, events = references[planned.command[0]]
            out = tmp_path_factory.mktemp(name[len("test_") :][:40]) / "out"
            outcomes[name] = pool.submit(_killed_then_finished, wrapper, out, planned.command, planned.kill(events))
        yield {name: reference for name, (reference, _) in references.items()}, outcomes


def _finished(runs: Runs, request: pytest.FixtureRequest) -> tuple[Outcome, Path]:
    """This test's trial, checked to have been killed by SIGKILL and finished by the rerun; and its reference."""
    references, outcomes = runs
    outcome = outcomes[request.function.__name__].result()
    planned = request.function.trial
    assert outcome.killed.returncode == -signal.SIGKILL, (
        f"the run was not killed at {outcome.kill} (exit {outcome.killed.returncode}):\n{outcome.killed.stderr[-3000:]}"
    )
    assert outcome.finished.returncode == 0, (
        f"the rerun after a kill at {outcome.kill} failed:\n{outcome.finished.stderr[-3000:]}"
    )
    return outcome, references[planned.command[0]]


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _assert_same_calibration(out: Path, reference: Path) -> None:
    assert not [name for name in _files(out) if name.endswith(".partial")], f"temp files left: {_files(out)}"
    assert _files(out) == _files(reference) == ["config.json", "model.safetensors"]
    tensors, expected = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert tensors.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(tensors[key], expected[key])] == [], "tensors differ"
    config, expected_config = (_without_timing(json.loads((o / "config.json").read_text())) for o in (out, reference))
    assert config == expected_config


def _assert_same_results(out: Path, reference: Path) -> None:
    assert not [name for name in _files(out) if name.endswith(".partial")], f"temp files left: {_files(out)}"
    assert _files(out) == _files(reference)
    results, expected = (_without_timing(json.loads((o / "results.json").read_text())) for o in (out, reference))
    assert results["rows"] == expected["rows"]
    assert results["settings"] == expected["settings"]


# ---------------------------------------------------------------- calibrate


# the 2nd training step: image epoch 1 half done, nothing saved yet
@trial(CALIBRATE, target=f"{TRAINING}.calibration_loss", when="before", call=2)
def test_calibrate_killed_within_an_epoch_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert outcome.left == []
    _assert_same_calibration(outcome.out, reference)


# just after image's epoch-1 checkpoint, before epoch 2 starts
@trial(CALIBRATE, target=f"{TRAINING}._save_checkpoint", when="after", call=1)
def test_calibrate_killed_between_epochs_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert outcome.left == ["checkpoints/image.safetensors"]
    _assert_same_calibration(outcome.out, reference)


# image's epoch-2 checkpoint is in its temp file, not yet renamed over the epoch-1 one
@trial(CALIBRATE, target="os.replace", file="image.safetensors", when="before", call=2)
def test_calibrate_killed_while_writing_a_checkpoint_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert "checkpoints/image.safetensors" in outcome.left
    assert [name for name in outcome.left if name.endswith(".partial")]
    _assert_same_calibration(outcome.out, reference)


# image is saved to the folder, its checkpoint not yet deleted, depth not started
@trial(CALIBRATE, target=f"{TRAINING}.write_calibrations", when="after", call=1)
def test_calibrate_killed_between_modalities_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert {"config.json", "model.safetensors"} <= set(outcome.left)
    _assert_same_calibration(outcome.out, reference)


# depth's write: the staged tensor file is whole, the new config.json in its temp file, not committed
@trial(CALIBRATE, target="os.replace", file="config.json", when="before", call=2)
def test_calibrate_killed_before_the_config_commit_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert [name for name in outcome.left if name.startswith("model-")]
    assert [name for name in outcome.left if name.endswith(".partial")]
    _assert_same_calibration(outcome.out, reference)


# depth's write: config.json is committed and names the staged file, not yet renamed onto model.safetensors
@trial(CALIBRATE, target="os.replace", file="model.safetensors", when="before", call=2)
def test_calibrate_killed_after_the_config_commit_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert [name for name in outcome.left if name.startswith("model-")]
    _assert_same_calibration(outcome.out, reference)


@random_trial(CALIBRATE, seed=0)
def test_calibrate_killed_at_a_random_moment_resumes_to_the_same_calibration(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    _assert_same_calibration(outcome.out, reference)


# ---------------------------------------------------------------- eval with attacks


# the 10th input gradient: apgd-ce (6 gradients) is done and saved, apgd-t is under way
@trial(EVALUATE, target="torch.autograd.grad", when="before", call=10)
def test_eval_killed_during_an_attack_resumes_to_the_same_results(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert [name for name in outcome.left if name.startswith("state/")], "killed before any attack was saved"
    _assert_same_results(outcome.out, reference)


# the state after the third attack is in its temp file, not yet renamed over the one after the second
@trial(EVALUATE, target="os.replace", file=STATE_FILE, when="before", call=3)
def test_eval_killed_while_saving_its_state_resumes_to_the_same_results(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert [name for name in outcome.left if name.endswith(".partial")]
    _assert_same_results(outcome.out, reference)


# every attack is done and saved; results.json is in its temp file
@trial(EVALUATE, target="os.replace", file="results.json", when="before", call=1)
def test_eval_killed_while_writing_results_resumes_to_the_same_results(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    assert "results.json" not in outcome.left
    assert [name for name in outcome.left if name.endswith(".partial")]
    _assert_same_results(outcome.out, reference)


@random_trial(EVALUATE, seed=0)
def test_eval_killed_at_a_random_moment_resumes_to_the_same_results(runs, request) -> None:
    outcome, reference = _finished(runs, request)
    _assert_same_results(outcome.out, reference)


# ---------------------------------------------------------------- the temp files themselves


def test_a_write_removes_the_temp_files_of_dead_writers_of_its_target_only(tmp_path: Path) -> None:
    from bindguard._io import atomic_write_text

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    dead_writer = tmp_path / f".results.json.{dead}-abcd1234.partial"
    old_writer = tmp_path / ".results.json.x1y2z3_4.partial"  # untagged: an older bindguard's
    live_writer = tmp_path / f".results.json.{os.getppid()}-abcd1234.partial"
    this_process = tmp_path / f".results.json.{os.getpid()}-abcd1234.partial"
    other_target = tmp_path / f".config.json.{dead}-abcd1234.partial"
    for path in (dead_writer, old_writer, live_writer, this_process, other_target):
        path.write_text("half")

    atomic_write_text(tmp_path / "results.json", "whole")

    assert (tmp_path / "results.json").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["results.json", live_writer.name, this_process.name, other_target.name]
    )
