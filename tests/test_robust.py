"""Robust evaluation: worst case over the ensemble, resumable state, rows, sanity flags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bindguard._types import Modality
from bindguard.attacks import ATTACKS, Attack, ThreatModel
from bindguard.data import Benchmark, ModalityData, load_dataset
from bindguard.encoders.base import Encoder
from bindguard.encoders.classifier import ClassifierEncoder
from bindguard.errors import ConfigError, UnknownNameError
from bindguard.evaluation import robust as robust_module
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE, Ensemble, Member, parse_ensemble
from bindguard.evaluation.flags import SanityChecker
from bindguard.evaluation.robust import RobustSettings, evaluate_robust
from bindguard.modalities import InputSpec, image_spec
from bindguard.registry import Entry

QUICK = RobustSettings(ensemble=parse_ensemble("pgd,rank"), steps=3, square_queries=0, checks=False, batch_size=8)


@pytest.fixture(scope="module")
def small_benchmark():
    return load_dataset("builtin", split="test", modalities=[Modality.IMAGE, Modality.POINT], limit=8)


def test_rows_report_attack_budget_and_are_below_clean(tinybind, small_benchmark) -> None:
    threats = [ThreatModel.linf("4/255"), ThreatModel.linf("1/255")]
    rows = evaluate_robust(tinybind, small_benchmark, threats, settings=QUICK)
    assert [(r["modality"], r["eps"]) for r in rows] == [
        ("image", 1 / 255),
        ("image", 4 / 255),
        ("point", 1 / 255),
        ("point", 4 / 255),
    ]
    for row in rows:
        assert row["task"] == "zero-shot" and row["adaptive"] is True and row["attack"] == "pgd,rank"
        assert row["norm"] == "linf" and row["steps"] == 3 and row["n"] == 8
        spec = tinybind.input_spec(row["modality"])
        assert row["eps_abs"] == pytest.approx(row["eps"] * spec.range)
        assert row["top1"] <= row["clean_top1"] and row["top5"] <= row["clean_top5"] and row["top1"] <= row["top5"]
        assert row["max_norm"] <= row["eps_abs"] * (1 + 1e-5)
        assert list(row["after"]) == ["pgd", "rank"]
        assert row["top1_ci95"][0] <= row["top1"] <= row["top1_ci95"][1]


def test_interrupted_run_resumes_without_redoing_attacks(
    tinybind, small_benchmark, tmp_path: Path, monkeypatch
) -> None:
    def run(model: str, directory: Path, progress=None) -> list[dict]:
        return evaluate_robust(
            tinybind,
            small_benchmark,
            [ThreatModel.linf("2/255")],
            modalities=[Modality.IMAGE],
            settings=QUICK,
            state_directory=directory,
            run_config={"model": model},
            progress=progress,
        )

    whole = run("tinybind", tmp_path / "whole")

    def stop_before_the_second_attack(stage: str, done: int, total: int) -> None:
        if done == 1 and total == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("tinybind", tmp_path / "state", stop_before_the_second_attack)
    assert list((tmp_path / "state").glob("image-linf-*.json"))
    calls: list[str] = []
    original = robust_module._attack_in_batches

    def recording(attack, *args, **kwargs):
        calls.append(attack.name)
        return original(attack, *args, **kwargs)

    monkeypatch.setattr(robust_module, "_attack_in_batches", recording)
    resumed = run("tinybind", tmp_path / "state")
    assert calls == ["rank"], "the resumed run redid an attack that had finished"
    assert resumed[0]["top1"] == whole[0]["top1"] and resumed[0]["after"] == whole[0]["after"]
    calls.clear()
    assert run("tinybind", tmp_path / "state")[0]["top1"] == whole[0]["top1"] and calls == []
    # a different configuration never reuses the saved state
    run("other", tmp_path / "state")
    assert calls == ["pgd", "rank"]


def test_standard_ensemble_and_bad_names() -> None:
    assert STANDARD_ENSEMBLE.attack_names == ["apgd-ce", "apgd-t", "rank", "embed"]
    assert parse_ensemble("standard") is STANDARD_ENSEMBLE
    assert parse_ensemble("pgd,pgd,fgsm").attack_names == ["pgd", "fgsm"]
    with pytest.raises(UnknownNameError, match="known: standard"):
        parse_ensemble("pgd,autoattack")
    with pytest.raises(ConfigError, match="target embeddings"):
        parse_ensemble("cross-modal")


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.linear(x.flatten(1)) + 0.5 * torch.randn(x.shape[0], 4)


class _Staircase(nn.Module):
    """Rounds its input: gradients are zero everywhere, the textbook masked model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.linear(torch.round(x * 4).flatten(1) / 4)


def _checker(model: nn.Module) -> SanityChecker:
    torch.manual_seed(0)
    encoder = ClassifierEncoder(model, height=8, width=8, classes=4).eval()
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        labels = model(x).argmax(1)
    settings = RobustSettings(steps=3, square_queries=0, check_samples=16)
    return SanityChecker(encoder, Modality.IMAGE, x, labels, torch.eye(4), settings)


def test_flags_catch_randomness_and_masked_gradients() -> None:
    noisy = _checker(_Noisy())
    assert "non-deterministic" in noisy._modality_flags()
    masked = _checker(_Staircase())
    flags = masked._modality_flags()
    assert "zero-gradients" in flags and "large-eps-not-zero" in flags
    healthy = _checker(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)))
    assert healthy._modality_flags() == []


def test_sweep_flags_accuracy_rising_with_eps() -> None:
    values = [(1, 0.5, 0.9), (2, 0.6, 0.9), (4, 0.1, 0.5), (8, 0.1, 0.7)]
    rows = [{"norm": "linf", "eps": e, "top1": t1, "top5": t5, "n": 100, "flags": []} for e, t1, t5 in values]
    SanityChecker.check_sweep(rows)
    assert [row["flags"] for row in rows] == [[], ["rises-with-eps"], [], ["rises-with-eps"]]


def test_cli_robust_sweep(tmp_path: Path) -> None:
    from bindguard.cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--modalities",
            "image,audio",
            "--n",
            "6",
            "--attacks",
            "pgd",
            "--steps",
            "2",
            "--eps",
            "1/255,4/255",
            "--square-queries",
            "0",
            "--no-checks",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    robust = [row for row in rows if row["attack"] == "pgd"]
    assert len(robust) == 4
    for row in robust:
        assert {"attack", "norm", "eps", "eps_abs", "steps", "adaptive", "flags", "top1", "top5", "n"} <= set(row)
    assert robust[2]["modality"] == "audio" and robust[2]["eps_abs"] == pytest.approx(2 / 255)


# ---------------------------------------------------------------- the worst case over scripted attacks

SCRIPT_CLASSES = 6  # more than five, so that an attack can break top-5 too and retire a sample
ID_PIXEL = -1  # the last pixel carries the sample's id: the toy encoder ignores it, scripted attacks read it
STEP = 0.08  # each scripted move, inside the Linf budget of 0.1


class _ClassPixels(Encoder):
    """The first six pixels of a (3, 2, 2) image are its class scores; class name "k" embeds as axis k."""

    name = "class-pixels"
    modalities = (Modality.IMAGE, Modality.TEXT)
    embed_dim = SCRIPT_CLASSES

    def input_spec(self, modality: Modality) -> InputSpec:
        self.check_modality(modality)
        return image_spec(2, 2, mean=None, std=None)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return torch.eye(SCRIPT_CLASSES)[[int(prompt) for prompt in x]]
        return x.flatten(1)[:, :SCRIPT_CLASSES]


class _ScriptedBreaker(Attack):
    """Breaks exactly the samples whose id is in ``breaks``: lifts the next class above the truth (top-1)
    and, with ``top5``, also sinks the truth below every other class; records every id it is given."""

    def __init__(self, threat: ThreatModel, *, breaks: set[int], top5: bool, seen: list[int], seed: int = 0):
        super().__init__(threat, seed=seed)
        self.breaks, self.top5, self.seen = breaks, top5, seen

    def _perturb(self, forward, x, spec, context, generator) -> tuple[torch.Tensor, int]:
        flat = x.view(x.shape[0], -1)  # x is the base class's private copy of the clean batch
        ids = (flat[:, ID_PIXEL] * 100).round().long().tolist()
        self.seen.extend(ids)
        for row, (sample, label) in enumerate(zip(ids, context.labels.tolist(), strict=True)):
            if sample in self.breaks:
                flat[row, (label + 1) % SCRIPT_CLASSES] += STEP
                if self.top5:
                    flat[row, label] -= STEP
        return x, x.shape[0]


def _class_pixel_benchmark(count: int, clean_wrong: set[int]) -> Benchmark:
    labels = torch.arange(count) % SCRIPT_CLASSES
    x = torch.zeros(count, 3, 2, 2)
    flat = x.view(count, -1)
    flat[:, :SCRIPT_CLASSES] = 0.5
    flat[torch.arange(count), labels] = 0.55
    for sample in clean_wrong:  # the next class wins, the truth stays second: top-1 wrong, top-5 right
        flat[sample, (int(labels[sample]) + 1) % SCRIPT_CLASSES] = 0.6
    flat[:, ID_PIXEL] = torch.arange(count) / 100
    return Benchmark(
        name="class-pixels",
        split="test",
        class_names=tuple(str(k) for k in range(SCRIPT_CLASSES)),
        templates={Modality.IMAGE: ("{}",)},
        data={Modality.IMAGE: ModalityData(x, labels, torch.arange(count), "glyph")},
    )


def test_worst_case_is_the_intersection_of_survivors(monkeypatch) -> None:
    """Three scripted attacks with known victims: the row counts a sample robust only if no attack broke it,
    a sample broken twice counts once, and a sample broken in top-1 and top-5 is not attacked again."""
    count, clean_wrong = 10, {8, 9}
    scripts = {  # name -> (ids it breaks, whether top-5 falls too)
        "script-a": ({0, 1}, True),
        "script-b": ({2, 3, 4}, False),
        "script-c": ({1, 3, 5}, False),  # 1 and 3 are already broken: only 5 is new
    }
    seen: dict[str, list[int]] = {name: [] for name in scripts}
    for name, (breaks, top5) in scripts.items():

        def factory(threat, *, seed=0, breaks=breaks, top5=top5, log=seen[name]):
            return _ScriptedBreaker(threat, breaks=breaks, top5=top5, seen=log, seed=seed)

        monkeypatch.setitem(ATTACKS.entries, name, Entry(name, factory))
    ensemble = Ensemble("scripted", tuple(Member(name, uses_steps=False) for name in scripts))
    settings = RobustSettings(ensemble=ensemble, square_queries=0, checks=False, batch_size=4)
    benchmark = _class_pixel_benchmark(count, clean_wrong)
    (row,) = evaluate_robust(_ClassPixels(), benchmark, [ThreatModel.linf(0.1)], settings=settings)

    broken = set().union(*(breaks for breaks, _ in scripts.values()))
    survivors = set(range(count)) - clean_wrong - broken
    assert survivors == {6, 7}
    assert row["n"] == count and row["clean_top1"] == pytest.approx((count - len(clean_wrong)) / count)
    assert row["top1"] * count == pytest.approx(len(survivors))
    assert row["top5"] * count == pytest.approx(count - 2)  # only script-a sank the truth below five others
    # after each attack: the clean-correct samples that no attack so far has broken
    assert row["after"] == pytest.approx({"script-a": 6 / count, "script-b": 3 / count, "script-c": 2 / count})
    assert row["max_norm"] == pytest.approx(STEP)
    # every sample robust in top-1 or top-5 is attacked; one broken in both is never attacked again
    assert sorted(seen["script-a"]) == list(range(count))
    assert sorted(seen["script-b"]) == sorted(set(range(count)) - {0, 1})
    assert sorted(seen["script-c"]) == sorted(set(range(count)) - {0, 1})


def test_a_square_member_of_an_ensemble_runs_with_the_run_query_budget() -> None:
    from bindguard.attacks import ThreatModel
    from bindguard.evaluation.ensemble import parse_ensemble

    square = parse_ensemble("apgd-ce,square").members[1]
    assert square.build(ThreatModel.linf("4/255"), steps=2, seed=0, square_queries=7).queries == 7
    assert square.build(ThreatModel.linf("4/255"), steps=2, seed=0).queries == 1000  # the attack's own default


def test_bfloat16_attacks_are_judged_in_float32_and_disagreements_are_flagged(tinybind, small_benchmark) -> None:
    from dataclasses import replace

    threat = [ThreatModel.linf("1/255")]
    full = evaluate_robust(tinybind, small_benchmark, threat, modalities=[Modality.IMAGE], settings=QUICK)[0]
    low = replace(QUICK, precision="bfloat16")
    row = evaluate_robust(tinybind, small_benchmark, threat, modalities=[Modality.IMAGE], settings=low)[0]
    assert "precision" not in full and row["precision"] == "bfloat16"
    assert 0 <= row["bf16_disagreements"] <= row["n"]
    assert ("bf16-disagrees" in row["flags"]) == (row["bf16_disagreements"] > 0)
    assert row["clean_top1"] == full["clean_top1"]  # clean verdicts are never made in bfloat16


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; allowed: float32, bfloat16"):
        RobustSettings(precision="fp8")


def test_a_batch_out_of_memory_is_attacked_in_halves(tinybind, small_benchmark, monkeypatch, caplog) -> None:
    """A batch above 2 samples 'runs out of memory': it is split down to pairs; every sample is still judged."""
    import logging

    original = Attack.run

    def run(self, encoder, modality, x, context):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, encoder, modality, x, context)

    monkeypatch.setattr(Attack, "run", run)
    with caplog.at_level(logging.WARNING):
        row = evaluate_robust(
            tinybind, small_benchmark, [ThreatModel.linf("4/255")], modalities=[Modality.IMAGE], settings=QUICK
        )[0]
    assert row["n"] == 8 and row["top1"] < row["clean_top1"]
    assert "out of memory attacking 8 samples at once; attacking them as 4 and 4" in caplog.text
    assert "attacking 4 samples at once; attacking them as 2 and 2" in caplog.text


def test_a_single_sample_out_of_memory_is_raised(tinybind, small_benchmark, monkeypatch) -> None:
    def run(self, encoder, modality, x, context):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Attack, "run", run)
    with pytest.raises(torch.OutOfMemoryError):
        evaluate_robust(
            tinybind, small_benchmark, [ThreatModel.linf("4/255")], modalities=[Modality.IMAGE], settings=QUICK
        )


def test_tracking_top1_only_attacks_fewer_samples_and_marks_top5_as_a_bound(tinybind, small_benchmark, monkeypatch):
    """With top5=False a sample is attacked only while its top-1 survives, as AutoAttack does."""
    from dataclasses import replace

    attacked = []
    original = Attack.run

    def run(self, encoder, modality, x, context):
        attacked.append(x.shape[0])
        return original(self, encoder, modality, x, context)

    monkeypatch.setattr(Attack, "run", run)
    threat = [ThreatModel.linf("4/255")]
    both = evaluate_robust(tinybind, small_benchmark, threat, modalities=[Modality.IMAGE], settings=QUICK)[0]
    top5_work = sum(attacked)
    attacked.clear()
    top1 = evaluate_robust(
        tinybind, small_benchmark, threat, modalities=[Modality.IMAGE], settings=replace(QUICK, top5=False)
    )[0]
    assert sum(attacked) <= top5_work and top1["top5_attacked"] is False and "top5_attacked" not in both
    assert top1["top1"] == both["top1"] == 0.0 and top1["top5"] >= both["top5"]
