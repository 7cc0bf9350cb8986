"""Caption retrieval under attack: both directions, media as the attacked query and as the attacked gallery item.

The verdicts are checked against plain Recall@K over the whole ranking (``recall_at_k``), the
gallery attack against a brute-force re-ranking of the gallery with the attacked item swapped in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import bindguard
import media_fixtures as fixtures
from bindguard._types import Modality
from bindguard.attacks import ThreatModel, create_attack
from bindguard.cli.main import app
from bindguard.evaluation.captions import (
    DEPTH,
    caption_embeddings,
    caption_verdict,
    gallery_context,
    gallery_stages,
)
from bindguard.evaluation.captions import gallery_verdict as verdict_of_gallery
from bindguard.evaluation.clean import RECALL_KS, embed_all
from bindguard.evaluation.ensemble import parse_ensemble
from bindguard.evaluation.metrics import recall_at_k
from bindguard.evaluation.robust import RobustSettings
from bindguard.objectives import GalleryHide, ObjectiveContext


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _uneven_owners(samples: int) -> torch.Tensor:
    """Samples with 1, 2 or 3 captions in turn, listed sample by sample as the loaders give them."""
    return torch.cat([torch.full((1 + index % 3,), index) for index in range(samples)])


# ---------------------------------------------------------------- the objective


def test_gallery_hide_grows_as_the_item_falls_below_its_queries_thresholds() -> None:
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one item, two captions
    context = ObjectiveContext(queries=queries, thresholds=torch.full((1, 2, DEPTH), 0.5), logit_scale=10.0)
    objective = GalleryHide(top_k=1)
    found, half, hidden = (F.normalize(torch.tensor([v]), dim=-1) for v in ([1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]))
    losses = [float(objective.loss(z, context)) for z in (found, half, hidden)]
    assert losses[0] < losses[1] < losses[2]
    assert [bool(objective.success(z, context)) for z in (found, half, hidden)] == [False, False, True]


def test_padding_queries_neither_retrieve_nor_move_the_loss() -> None:
    queries = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # the second query is padding
    thresholds = torch.stack([torch.full((DEPTH,), -2.0), torch.full((DEPTH,), 2.0)])[None]
    context = ObjectiveContext(queries=queries, thresholds=thresholds, logit_scale=10.0)
    z = torch.tensor([[0.6, 0.8]], requires_grad=True)
    GalleryHide(top_k=1).loss(z, context).sum().backward()
    assert z.grad[0, 1] == 0  # only the real query's direction
    assert not GalleryHide(top_k=1).success(z, context)  # a real query with no competitor always retrieves it
    assert verdict_of_gallery(context)(z.detach(), torch.tensor([0]))[0].tolist() == [1.0]


def test_gallery_hide_refuses_a_depth_its_thresholds_do_not_reach() -> None:
    context = ObjectiveContext(queries=torch.zeros(1, 1, 2), thresholds=torch.zeros(1, 1, 5))
    with pytest.raises(bindguard.errors.ConfigError, match="depth 10 needs thresholds for 10 ranks"):
        GalleryHide(top_k=10).check(context)


# ---------------------------------------------------------------- verdicts against plain Recall@K


@pytest.mark.parametrize("samples", [4, 30])  # fewer and more samples than the deepest K
def test_clean_verdicts_equal_recall_at_k_over_the_whole_ranking(samples: int) -> None:
    owners = _uneven_owners(samples)
    texts, media = _unit(len(owners), 16, seed=1), _unit(samples, 16, seed=2)
    every = torch.arange(samples)
    to_text = recall_at_k(media @ texts.T, every[:, None] == owners[None, :], RECALL_KS)
    hits = caption_verdict(texts, owners)(media, every)
    assert [float(hit.float().mean()) for hit in hits] == pytest.approx([to_text[k] for k in RECALL_KS])
    to_media = recall_at_k(texts @ media.T, owners[:, None] == every[None, :], RECALL_KS)
    counts = verdict_of_gallery(gallery_context(texts, owners, media))(media, every)
    assert [float(count.sum()) / len(owners) for count in counts] == pytest.approx([to_media[k] for k in RECALL_KS])


def test_thresholds_are_the_other_items_ranked_scores_padded_below_any_cosine() -> None:
    owners = torch.tensor([0, 0, 1, 2])
    texts, media = _unit(4, 8, seed=3), _unit(3, 8, seed=4)
    context = gallery_context(texts, owners, media)
    assert context.queries.shape == (3, 2, 8) and context.thresholds.shape == (3, 2, DEPTH)
    scores = texts @ media.T
    # caption 2 belongs to sample 1: its competitors are samples 0 and 2, best first, then -2
    expected = scores[2, [0, 2]].sort(descending=True).values
    assert torch.allclose(context.thresholds[1, 0, :2], expected) and bool((context.thresholds[1, 0, 2:] == -2).all())
    assert bool((context.thresholds[1, 1] == 2).all()) and bool((context.queries[1, 1] == 0).all())  # padding


# ---------------------------------------------------------------- the attack, checked by re-ranking


def test_the_gallery_attack_is_measured_as_re_ranking_the_gallery_with_the_item_swapped_in(
    tinybind, test_benchmark
) -> None:
    """Each attacked item's Recall@K equals the plain ranking of its captions over the gallery with it swapped in."""
    data = test_benchmark.data[Modality.IMAGE]
    x = data.inputs[:12]
    names = test_benchmark.class_names
    captions = [
        [f"a photo of the digit {names[int(label)]}", f"the number {names[int(label)]}"] for label in data.labels[:12]
    ]
    texts, owners = caption_embeddings(tinybind, captions)
    media = embed_all(tinybind, Modality.IMAGE, x, batch_size=12)
    context = gallery_context(texts, owners, media)
    verdict = verdict_of_gallery(context)
    clean = verdict(media, torch.arange(12))
    attack = create_attack("apgd-ce", threat=ThreatModel.linf("8/255"), objective=GalleryHide(top_k=1), steps=10)
    result = attack.run(tinybind, Modality.IMAGE, x, context)
    adversarial = embed_all(tinybind, Modality.IMAGE, result.adversarial, batch_size=12)
    attacked = verdict(adversarial, torch.arange(12))
    for item in range(12):
        gallery = media.clone()
        gallery[item] = adversarial[item]
        mine = torch.nonzero(owners == item).flatten()
        relevant = (torch.arange(12) == item).expand(len(mine), 12)
        plain = recall_at_k(texts[mine] @ gallery.T, relevant, RECALL_KS)
        assert [float(count[item]) / len(mine) for count in attacked] == pytest.approx([plain[k] for k in RECALL_KS])
    assert float(attacked[0].sum()) < float(clean[0].sum())  # the attack hides items at 8/255


def test_gallery_stages_turn_the_run_s_ensemble_on_the_gallery_item() -> None:
    threat = ThreatModel.linf("4/255")
    standard = RobustSettings(steps=5, square_queries=20)
    assert [name for name, _, _ in gallery_stages(standard, threat)] == ["hide", "hide-rank", "embed", "square"]
    built = {name: build() for name, build, _ in gallery_stages(standard, threat)}
    assert built["hide"].objective.top_k == 1 and built["hide-rank"].objective.top_k == DEPTH
    assert built["square"].objective.name == "hide" and built["embed"].objective.name != "hide"
    custom = RobustSettings(ensemble=parse_ensemble("pgd,fgsm"), steps=3, square_queries=0)
    assert [name for name, _, _ in gallery_stages(custom, threat)] == ["pgd", "fgsm"]
    assert all(build().objective.name == "hide" for _, build, _ in gallery_stages(custom, threat))


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def msrvtt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    root = fixtures.msrvtt(tmp_path_factory.mktemp("msrvtt"))
    out = tmp_path_factory.mktemp("run") / "run"
    result = CliRunner().invoke(
        app,
        ["eval", "--data", "msrvtt", "--data-root", str(root), "--modalities", "video", "--n", "6", "--attacks",
         "standard", "--steps", "4", "--square-queries", "20", "--no-checks", "--eps", "1/255,8/255", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"] if r["task"] == "caption-retrieval"]
    return rows, out


def test_both_directions_are_attacked_at_every_budget_with_recall_at_1_5_10(msrvtt_run) -> None:
    rows, _ = msrvtt_run
    clean = {r["gallery"]: r for r in rows if r["attack"] == "none"}
    attacked = [r for r in rows if r["attack"] != "none"]
    assert sorted((r["gallery"], r["eps"]) for r in attacked) == sorted(
        (gallery, eps) for gallery in ("text", "video") for eps in (1 / 255, 8 / 255)
    )
    for row in attacked:
        assert row["attacked"] == ("query" if row["gallery"] == "text" else "gallery")
        assert row["n"] == clean[row["gallery"]]["n"]  # captions for text->video, samples for video->text
        for k in RECALL_KS:
            assert row[f"clean_recall@{k}"] == pytest.approx(clean[row["gallery"]][f"recall@{k}"])
            assert row[f"recall@{k}"] <= row[f"clean_recall@{k}"] + 1e-9
        assert row["flags"] == [] and row["square"]["queries"] == 20
    gallery = [r for r in attacked if r["gallery"] == "video"]
    assert all(r["attacks"] == ["hide", "hide-rank", "embed", "square"] for r in gallery)
    weak, strong = sorted(gallery, key=lambda r: r["eps"])
    assert strong["recall@5"] <= weak["recall@5"] and strong["recall@5"] < strong["clean_recall@5"]


def test_the_report_shows_both_attacked_directions(msrvtt_run) -> None:
    _, out = msrvtt_run
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    html = (out / "report.html").read_text()
    assert "gallery attacked" in html and "query attacked" in html
