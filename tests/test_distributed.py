"""Launched runs (torchrun, gloo on the CPU) write exactly the results of one process; interrupted work resumes by batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bindguard import distributed
from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.evaluation import robust
from bindguard.evaluation.clean import embed_all
from bindguard.evaluation.robust import StageLedger, _attack_in_batches
from bindguard.evaluation.state import RunState
from bindguard.objectives import ObjectiveContext

# Several batches per rank and per attack (12 samples in batches of 4 on 2 ranks: 2 and 1), every
# attack of the standard ensemble, Square and the sanity checks, on two modalities.
EVALUATE = [
    "eval", "--modalities", "image,audio", "--n", "12", "--batch-size", "4", "--attacks", "standard",
    "--steps", "3", "--square-queries", "10", "--eps", "2/255,4/255", "--seed", "0", "--quiet",
]  # fmt: skip


def _environment() -> dict[str, str]:
    # one thread a process: two ranks on two cores, as a single process would use them
    return os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _launched(arguments: list[str]) -> list[str]:
    """The command run by torchrun as two gloo processes on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "bindguard",
        "--",
        *arguments,
    ]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    _run([sys.executable, "-m", "bindguard", *EVALUATE, "--out", str(one)])
    launched = _run(_launched([*EVALUATE, "--out", str(two)]))
    return one, two, launched.stdout


def _rows(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["rows"]


def test_two_gloo_processes_write_the_rows_of_one_process(one_and_two):
    one, two, _ = one_and_two
    single, launched = _rows(one), _rows(two)
    assert any(row["attack"] != "none" for row in single)
    assert launched == single


def test_each_rank_keeps_its_own_state_and_rank_zero_alone_writes_results(one_and_two):
    _, two, stdout = one_and_two
    names = sorted(path.name for path in (two / "state").iterdir())
    assert "image-linf-0.01568627.json" in names and "image-linf-0.01568627.rank1.json" in names
    assert [path.name for path in two.glob("results*.json")] == ["results.json"]
    assert stdout.count("Zero-shot classification") == 1  # rank 0 alone prints the tables
    # each rank attacked its own batches: of the last attack's three batches, rank 1 did the second
    last = {
        rank: json.loads((two / "state" / f"audio-linf-0.01568627{suffix}.json").read_text())["entries"]["batches"]
        for rank, suffix in ((0, ""), (1, ".rank1"))
    }
    assert sorted(last[1]["done"]) == ["1"] and sorted(last[0]["done"]) == ["0", "2"]


def test_a_launched_command_that_runs_in_one_process_is_refused_in_one_line():
    environment = _environment() | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "bindguard", "demo", "--out", "never-written", "--quick"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "runs in one process" in result.stderr and "without torchrun" in result.stderr
    assert not Path("never-written").exists()


def test_batches_are_dealt_round_robin_and_cover_every_item_once():
    dealt = [[number for number, _ in distributed.my_batches(10, 3, distributed.World(rank, 3))] for rank in range(3)]
    assert dealt == [[0, 3], [1], [2]]
    positions = sorted(
        index
        for rank in range(3)
        for _, part in distributed.my_batches(10, 3, distributed.World(rank, 3))
        for index in range(10)[part]
    )
    assert positions == list(range(10))


def test_one_process_embeds_alike_with_and_without_sharding(tinybind, test_benchmark):
    inputs = test_benchmark.data[Modality.IMAGE].inputs[:10]
    sharded = embed_all(tinybind, Modality.IMAGE, inputs, batch_size=3, shard=True)
    assert torch.equal(sharded, embed_all(tinybind, Modality.IMAGE, inputs, batch_size=3))


class _Counting:
    """An attack that counts the samples it is run on."""

    def __init__(self, attack):
        self.attack, self.samples = attack, 0

    def run(self, encoder, modality, x, context):
        self.samples += x.shape[0]
        return self.attack.run(encoder, modality, x, context)


def test_an_interrupted_attack_resumes_from_its_finished_batches(tinybind, test_benchmark, tmp_path):
    data = test_benchmark.data[Modality.IMAGE]
    x, labels = data.inputs[:10], data.labels[:10]
    from bindguard.encoders.centers import benchmark_centers

    centers = benchmark_centers(tinybind, test_benchmark, Modality.IMAGE)
    context = ObjectiveContext(labels=labels, centers=centers, logit_scale=tinybind.logit_scale(Modality.IMAGE))
    index = torch.arange(10)
    attack = create_attack("apgd-ce", threat=ThreatModel("linf", 8 / 255), steps=3)
    state = RunState(tmp_path / "state.json", {"run": 1})
    fresh = _attack_in_batches(attack, tinybind, Modality.IMAGE, x, index, context, 4, ledger=StageLedger(state, "a"))
    saved = json.loads((tmp_path / "state.json").read_text())["entries"]["batches"]
    # as if killed after the first two of three batches
    del saved["done"]["2"]
    state.put("batches", saved)

    resumed_state = RunState(tmp_path / "state.json", {"run": 1})
    counting = _Counting(attack)
    resumed = _attack_in_batches(
        counting, tinybind, Modality.IMAGE, x, index, context, 4, ledger=StageLedger(resumed_state, "a")
    )
    assert counting.samples == 2  # the last batch (samples 8 and 9) alone
    assert all(torch.equal(a, b) for a, b in zip(fresh[0][0], resumed[0][0], strict=True))
    assert torch.equal(fresh[1], resumed[1])
    # a finished batch of another attack is never taken for this one
    other = _Counting(attack)
    _attack_in_batches(other, tinybind, Modality.IMAGE, x, index, context, 4, ledger=StageLedger(resumed_state, "b"))
    assert other.samples == 10


def test_ranks_resume_from_the_furthest_saved_progress(monkeypatch, tmp_path):
    behind = {"top1": [True], "top5": [True], "max_norm": [0.0], "after": {"apgd-ce": 1.0}}
    ahead = behind | {"after": {"apgd-ce": 1.0, "apgd-t": 1.0}}
    monkeypatch.setattr(
        distributed, "gather", lambda value, world=None: [(behind, {}), (ahead, {"broken": 0}), (None, {})]
    )
    worst, square = robust._agreed_progress(RunState(None, {}))
    assert worst == ahead and square == {"broken": 0}


# 3 batches of 8 per epoch, each split 4 + 4 between the two processes
CALIBRATE = [
    "calibrate", "--modalities", "image", "--limit", "24", "--batch-size", "8", "--attack-steps", "2",
    "--no-evaluate", "--seed", "0", "--quiet",
]  # fmt: skip


def _trained(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _calibrated_alone_and_on_two(tmp_path: Path, *options: str) -> tuple[dict, dict]:
    _run([sys.executable, "-m", "bindguard", *CALIBRATE, *options, "--out", str(tmp_path / "one")])
    _run(_launched([*CALIBRATE, *options, "--out", str(tmp_path / "two")]))
    return _trained(tmp_path / "one"), _trained(tmp_path / "two")


def test_two_gloo_processes_train_the_steps_of_one_process(tmp_path):
    """Clean training (no examples): the runs differ by the rounding of batch halves (a gradient differs by
    4e-7 relative), which Adam's division by the root of squared gradients grows to a fraction of a step."""
    one, two = _calibrated_alone_and_on_two(tmp_path, "--objective", "clean", "--epochs", "1", "--limit", "32")
    assert sorted(one) == sorted(two)
    moved = max(float(one[k].abs().max()) for k in one if ".up." in k)
    assert moved > 1e-3  # four steps of learning rate 2e-3 moved the zero-initialised factors
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-4  # a twentieth of one step


def test_adversarial_training_on_two_processes_stays_within_a_stated_tolerance(tmp_path):
    """With adversarial examples a rounding difference also moves the example (PGD steps by the gradient's
    sign): measured 1.2% of the training's displacement here, where one process drifts 0.4% between 1
    and 2 threads. The stated tolerance is 5%."""
    one, two = _calibrated_alone_and_on_two(tmp_path, "--objective", "ce", "--epochs", "1", "--limit", "24")
    moved = [k for k in one if ".up." in k or "shifts" in k]  # zero at the start: the training's displacement
    difference = sum(float((one[k] - two[k]).square().sum()) for k in moved) ** 0.5
    displacement = sum(float(one[k].square().sum()) for k in moved) ** 0.5
    assert displacement > 0 and difference / displacement < 0.05


@pytest.mark.parametrize(("norm", "modality"), [("linf", "image"), ("l2", "audio"), ("l2", "point")])
def test_shares_of_a_batch_start_where_the_whole_batch_starts(tinybind, test_benchmark, norm, modality):
    modality = Modality.parse(modality)
    spec = tinybind.input_spec(modality)
    x = test_benchmark.data[modality].inputs[:7]
    threat = ThreatModel(norm, 4 / 255)

    def start(part: slice, within: tuple[int, int] | None) -> torch.Tensor:
        return threat.random_delta(x[part], spec, torch.Generator().manual_seed(3), within=within)

    whole = start(slice(0, 7), None)
    shares = [start(slice(0, 4), (0, 7)), start(slice(4, 7), (4, 7))]
    assert torch.equal(torch.cat(shares), whole)


def test_a_batch_is_shared_out_contiguously_and_whole():
    parts = [distributed.share(10, distributed.World(rank, 3)) for rank in range(3)]
    assert parts == [slice(0, 4), slice(4, 7), slice(7, 10)]
