"""Robust evaluation: per-sample worst case over an attack ensemble, attacking only what is still robust.

For each modality and threat, every sample starts robust where it is correct when clean; each
attack then runs only on samples still robust for top-1 or top-5, and a sample stays robust only
if no attack broke it. Square runs last, as a black-box check whose breaks count too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bindguard import distributed
from bindguard._checks import check_count, check_seed
from bindguard._types import Modality
from bindguard.attacks import Attack, ThreatModel, create_attack
from bindguard.attacks.apgd import APGD
from bindguard.data import Benchmark
from bindguard.data.rows import Rows
from bindguard.encoders import Encoder
from bindguard.encoders.centers import benchmark_centers
from bindguard.errors import ConfigError
from bindguard.evaluation.clean import embed_all
from bindguard.evaluation.ensemble import STANDARD_ENSEMBLE, Ensemble, Member
from bindguard.evaluation.flags import SanityChecker
from bindguard.evaluation.metrics import wilson_interval
from bindguard.evaluation.state import RunState
from bindguard.objectives import ObjectiveContext
from bindguard.objectives.base import center_scores

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
# (B, D) embeddings of the samples at (B,) indices -> per-sample hits, shallowest first: booleans
# (top-1, top-5 for zero-shot) or counts (a gallery item's queries that still retrieve it within K)
Verdict = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class RobustSettings:
    """How hard to attack.

    Attributes:
        ensemble: the attacks whose per-sample worst case is reported.
        steps: iterations of each gradient attack.
        square_queries: queries of the Square check (0 disables it).
        checks: run the sanity checks (more steps, large eps, gradients, determinism).
        check_samples: samples used by the costlier checks.
        batch_size: samples attacked at once (a batch that runs out of accelerator memory is
            attacked in halves).
        seed: seeds every attack.
        top5: keep attacking a sample while its top-5 survives (default), so the top-5 figure is a
            worst case too; False attacks a sample only while its top-1 survives (as AutoAttack
            does), which is cheaper, and the top-5 figure is then an upper bound.
        precision: ``float32``, or ``bfloat16`` for the attack iterations (autocast); every
            decision is then re-made in float32, and a sample whose top-1 verdict differs between
            the two raises the ``bf16-disagrees`` flag.
    """

    ensemble: Ensemble = STANDARD_ENSEMBLE
    steps: int = 100
    square_queries: int = 1000
    checks: bool = True
    check_samples: int = 32
    batch_size: int = 64
    seed: int = 0
    precision: str = "float32"
    top5: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.ensemble, Ensemble):
            raise ConfigError(f"ensemble must be an Ensemble (parse_ensemble), got {type(self.ensemble).__name__}")
        check_count("steps", self.steps, 1)
        check_count("square_queries", self.square_queries, 0)
        check_count("check_samples", self.check_samples, 1)
        check_count("batch_size", self.batch_size, 1)
        check_seed(self.seed)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")


class StageLedger:
    """The finished batches of the attack now running, kept in the run state: an interrupted attack
    resumes batch by batch, and a rank that was killed redoes only its own batches."""

    def __init__(self, state: RunState, stage: str):
        saved = state.get("batches") or {}
        self.state, self.stage = state, stage
        self.done: dict[str, dict] = dict(saved.get("done", {})) if saved.get("stage") == stage else {}

    def get(self, number: int) -> BatchOutcome | None:
        saved = self.done.get(str(number))
        if saved is None:
            return None
        hits = [tuple(torch.tensor(values) for values in judged) for judged in saved["hits"]]
        return BatchOutcome(hits, torch.tensor(saved["norms"], dtype=torch.float32), saved["disagreements"])

    def put(self, number: int, outcome: BatchOutcome) -> None:
        self.done[str(number)] = {
            "hits": [[values.tolist() for values in judged] for judged in outcome.hits],
            "norms": outcome.norms.float().tolist(),
            "disagreements": outcome.disagreements,
        }
        self.state.put("batches", {"stage": self.stage, "done": self.done})


@dataclass
class BatchOutcome:
    """One attacked batch: per judge its verdict's hits ((top-1, top-5) for zero-shot), achieved norms,
    and how many samples' first verdict differed between bfloat16 and float32 (0 in float32)."""

    hits: list[tuple[torch.Tensor, ...]]
    norms: torch.Tensor
    disagreements: int = 0


def _attack_fitting(
    attack: Attack, encoder: Encoder, modality: Modality, x: torch.Tensor, context: ObjectiveContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, norms) of a batch; one that runs out of accelerator memory is attacked in halves
    (each half seeded as a batch of its own), down to single samples. Finished batches are kept."""
    try:
        result = attack.run(encoder, modality, x, context)
        return result.adversarial, result.norms.detach().float().cpu()
    except torch.OutOfMemoryError:
        if x.shape[0] == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = x.shape[0] // 2
    logger.warning(
        "out of memory attacking %d samples at once; attacking them as %d and %d", x.shape[0], half, x.shape[0] - half
    )
    parts = [torch.arange(half), torch.arange(half, x.shape[0])]
    done = [_attack_fitting(attack, encoder, modality, x[part], context.subset(part)) for part in parts]
    return torch.cat([adversarial for adversarial, _ in done]), torch.cat([norms for _, norms in done])


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast for the attack's iterations when asked for; a no-op in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _attack_in_batches(
    attack: Attack,
    encoder: Encoder,
    modality: Modality,
    x: Rows,
    index: torch.Tensor,
    context: ObjectiveContext,
    batch_size: int,
    judges: Sequence[Encoder] | None = None,
    ledger: StageLedger | None = None,
    precision: str = "float32",
    verdict: Verdict | None = None,
) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor, int]:
    """Attack the samples ``x[index]`` batch by batch and judge each adversarial batch at once.

    Only one batch of inputs is in memory at a time; adversarial inputs are not kept. In a launched
    run (a collective call) each rank attacks its own batches and every rank receives all outcomes;
    a batch is the same samples on any number of ranks and each attack run is seeded alike, so the
    outcomes equal one process's.

    Args:
        attack, encoder, modality: what attacks what.
        x: every sample's raw input (a tensor or rows read on demand); ``context`` covers all of them.
        index: (K,) the samples to attack.
        batch_size: samples per attacked batch.
        judges: encoders whose top-1/top-5 hits on the adversarial inputs are returned (default: ``encoder``).
        ledger: where finished batches are kept and found again after an interruption.
        precision: ``bfloat16`` runs the attack under autocast; the judges decide in float32.
        verdict: what counts as a hit (default: top-1 and top-5 against ``context.centers``).

    Returns:
        Per judge, the verdict's (K,) hits; (K,) achieved norms; and how many samples' first hit
        by the first judge differs in bfloat16.
    """
    judges = list(judges or [encoder])
    verdict = verdict or (
        lambda embedding, batch: top_hits(center_scores(embedding, context.centers), context.labels[batch])
    )
    mine = {}
    for number, positions in distributed.my_batches(index.numel(), batch_size):
        saved = ledger.get(number) if ledger is not None else None
        if saved is not None:
            mine[number] = saved
            continue
        batch = index[positions]
        with _autocast(encoder.device, precision):
            adversarial, norms = _attack_fitting(attack, encoder, modality, x[batch], context.subset(batch))
        hits, disagreements = [], 0
        with torch.no_grad():
            for judge in judges:
                embedding = judge.encode_modality(modality, adversarial.to(judge.device), validate=False)
                hits.append(verdict(embedding.cpu(), batch))
            if precision == "bfloat16":
                with _autocast(encoder.device, precision):
                    embedding = judges[0].encode_modality(modality, adversarial.to(judges[0].device), validate=False)
                low = verdict(embedding.float().cpu(), batch)[0]
                disagreements = int((low != hits[0][0]).sum())
        mine[number] = BatchOutcome(hits, norms, disagreements)
        if ledger is not None:
            ledger.put(number, mine[number])
    outcomes = distributed.gather_batches(mine)
    joined = [
        tuple(torch.cat([o.hits[j][h] for o in outcomes]) for h in range(len(outcomes[0].hits[j])))
        for j in range(len(judges))
    ]
    return joined, torch.cat([o.norms for o in outcomes]), sum(o.disagreements for o in outcomes)


def attack_stages(settings: RobustSettings, threat: ThreatModel) -> list[tuple[str, Callable[[], Attack], bool]]:
    """(name, builder, is the Square check) for each attack, in order."""

    def build(member: Member) -> Attack:
        attack = member.build(threat, steps=settings.steps, seed=settings.seed, square_queries=settings.square_queries)
        if not settings.top5 and isinstance(attack, APGD):
            attack.early_stop = True  # only top-1 counts: a broken sample needs no more steps
        return attack

    stages = [(member.attack, lambda member=member: build(member), False) for member in settings.ensemble.members]
    if settings.square_queries and "square" not in settings.ensemble.attack_names:
        stages.append(
            (
                "square",
                lambda: create_attack("square", threat=threat, queries=settings.square_queries, seed=settings.seed),
                True,
            )
        )
    return stages


class WorstCase:
    """Per-sample robustness, narrowed by each attack in turn: for zero-shot, top-1 and top-5 hits;
    in general any per-sample hits, shallowest first, each kept at its lowest over the attacks."""

    def __init__(self, *hits: torch.Tensor):
        self.hits = [hit.clone() for hit in hits]
        self.max_norm = torch.zeros(hits[0].shape[0])
        self.after: dict[str, float] = {}
        self.disagreements = 0  # attacked samples whose top-1 verdict differed between bfloat16 and float32

    @property
    def top1(self) -> torch.Tensor:
        return self.hits[0]

    @property
    def top5(self) -> torch.Tensor:
        return self.hits[1]

    @property
    def active(self) -> torch.Tensor:
        """Samples some hit still stands for, worth attacking further."""
        return torch.nonzero(torch.stack([hit > 0 for hit in self.hits]).any(0)).flatten()

    def attackable(self, top5: bool) -> torch.Tensor:
        """The samples the next attack runs on: any hit standing, or only the first (``RobustSettings.top5``)."""
        return self.active if top5 else torch.nonzero(self.top1 > 0).flatten()

    def narrow(self, index: torch.Tensor, *hits_and_norms: torch.Tensor) -> None:
        """Take the attack's ``hits`` on the samples at ``index`` (then their achieved ``norms``) where lower."""
        *hits, norms = hits_and_norms
        broken = torch.stack([new < kept[index] for kept, new in zip(self.hits, hits, strict=True)]).any(0)
        self.max_norm[index] = torch.where(broken, torch.maximum(self.max_norm[index], norms), self.max_norm[index])
        for kept, new in zip(self.hits, hits, strict=True):
            kept[index] = torch.minimum(kept[index], new)

    def to_json(self) -> dict:
        return {
            "hits": [hit.tolist() for hit in self.hits],
            "max_norm": self.max_norm.tolist(),
            "after": self.after,
            "disagreements": self.disagreements,
        }

    @classmethod
    def from_json(cls, saved: dict) -> WorstCase:
        hits = saved["hits"] if "hits" in saved else [saved["top1"], saved["top5"]]  # the older, zero-shot form
        worst = cls(*(torch.tensor(values) for values in hits))
        worst.max_norm = torch.tensor(saved["max_norm"])
        worst.after = dict(saved["after"])
        worst.disagreements = int(saved.get("disagreements", 0))
        return worst


def top_hits(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ranked = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return ranked[:, 0] == labels, (ranked == labels[:, None]).any(1)


def evaluate_modality_threat(
    encoder: Encoder,
    modality: Modality,
    x: Rows,
    labels: torch.Tensor,
    centers: torch.Tensor,
    threat: ThreatModel,
    settings: RobustSettings,
    *,
    state: RunState,
    progress: Progress | None = None,
    verdict: Verdict | None = None,
    stages: list[tuple[str, Callable[[], Attack], bool]] | None = None,
    context: ObjectiveContext | None = None,
) -> tuple[WorstCase, dict]:
    """Worst case of one modality under one threat; returns it and the Square outcome.

    By default a sample is judged by its top-1 and top-5 against ``centers`` under the run's
    ensemble; another task passes its own ``verdict``, attack ``stages`` and objective ``context``
    (whose labels, centers and clean embeddings are filled in here).
    """
    clean_embeddings = embed_all(encoder, modality, x, batch_size=settings.batch_size, shard=True)
    context = replace(
        context or ObjectiveContext(),
        labels=labels, centers=centers, clean=clean_embeddings, logit_scale=encoder.logit_scale(modality),
    )  # fmt: skip
    verdict = verdict or (lambda embedding, batch: top_hits(center_scores(embedding, centers), labels[batch]))
    saved, square_outcome = _agreed_progress(state)
    worst = WorstCase.from_json(saved) if saved else WorstCase(*verdict(clean_embeddings, torch.arange(len(labels))))
    stages = stages if stages is not None else attack_stages(settings, threat)
    label = f"{modality.value} {threat}"
    for stage_number, (name, build, is_check) in enumerate(stages):
        if progress:
            progress(label, stage_number, len(stages))
        if name in worst.after:
            continue  # finished before an interruption
        index = worst.attackable(settings.top5)
        before_top1 = worst.top1.clone()
        if index.numel():
            ledger = StageLedger(state, name)
            (hits,), norms, disagreements = _attack_in_batches(
                build(), encoder, modality, x, index, context, settings.batch_size, ledger=ledger,
                precision=settings.precision, verdict=verdict,
            )  # fmt: skip
            worst.narrow(index, *hits, norms)
            worst.disagreements += disagreements
        if is_check:
            broken = int((worst.top1 < before_top1).sum())
            square_outcome = {"broken": broken, "queries": settings.square_queries}
            state.put("square", square_outcome)
        worst.after[name] = float(worst.top1.float().mean())
        logger.info("%s after %s: %s", label, name, " ".join(f"{hit.float().mean():.3f}" for hit in worst.hits))
        state.put("worst", worst.to_json())
    if progress:
        progress(f"{modality.value} {threat}", len(stages), len(stages))
    return worst, square_outcome


def _agreed_progress(state: RunState) -> tuple[dict | None, dict]:
    """The saved worst case and Square outcome that every rank resumes from: the furthest any rank got.

    Ranks save the same gathered worst case after each attack, but a rank killed between two
    saves may be one attack behind; all take the most advanced so that they run the same attacks.
    """
    saved = distributed.gather((state.get("worst"), state.get("square") or {}))
    return max(saved, key=lambda entry: len(entry[0]["after"]) if entry[0] else -1)


def attack_notes(settings: RobustSettings, threat: ThreatModel, num_classes: int) -> list[str]:
    """What the ensemble's attacks say about how they ran on this many classes (e.g. targets capped at C - 1)."""
    return [note for _, build, _ in attack_stages(settings, threat) for note in build().notes_for(num_classes)]


def how_attacked(settings: RobustSettings, threat: ThreatModel, spec_range: float, attacks: list[str]) -> dict:
    """The fields every robust row states beside its figures: the attacks, the budget (relative and absolute), the steps."""
    return {
        "attack": settings.ensemble.name,
        "attacks": attacks,
        "norm": threat.norm,
        "eps": threat.eps,
        "eps_abs": threat.eps * spec_range,
        "steps": settings.steps,
        "square_queries": settings.square_queries,
        "adaptive": True,
    }


def robust_row(
    modality: Modality,
    threat: ThreatModel,
    spec_range: float,
    worst: WorstCase,
    clean_top1: float,
    clean_top5: float,
    settings: RobustSettings,
    square: dict,
    *,
    num_classes: int,
) -> dict:
    n = worst.top1.shape[0]
    top1, top5 = float(worst.top1.float().mean()), float(worst.top5.float().mean())
    low, high = wilson_interval(top1 * n, n)
    return {
        "modality": modality.value,
        "task": "zero-shot",
        **how_attacked(settings, threat, spec_range, [name for name, _, _ in attack_stages(settings, threat)]),
        "n": n,
        "clean_top1": clean_top1,
        "clean_top5": clean_top5,
        "top1": top1,
        "top5": top5,
        "top1_ci95": [low, high],
        # modality -> text retrieval over the class prompts is top-k accuracy under the same attack
        "recall@1": top1,
        "recall@5": top5,
        "max_norm": float(worst.max_norm.max()) if n else 0.0,
        "after": worst.after,
        "square": square,
        "flags": [],
        "notes": attack_notes(settings, threat, num_classes),
        **({} if settings.top5 else {"top5_attacked": False}),  # top-5 then is an upper bound
        # attacked in bfloat16: how many samples' top-1 verdict differed from float32's (which stands)
        **(
            {}
            if settings.precision == "float32"
            else {"precision": settings.precision, "bf16_disagreements": worst.disagreements}
        ),
    }


def evaluate_robust(
    encoder: Encoder,
    benchmark: Benchmark,
    threats: Sequence[ThreatModel],
    *,
    modalities: Sequence[Modality] | None = None,
    settings: RobustSettings | None = None,
    state_directory: Path | None = None,
    run_config: dict | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Robust zero-shot accuracy per modality and threat, with sanity flags.

    Args:
        encoder: the exact model whose robustness is claimed; attacked end to end.
        benchmark: labelled data.
        threats: budgets to sweep (sorted by eps per norm for the monotonicity check).
        modalities: subset (default: all the benchmark has).
        settings: ensemble, steps, checks.
        state_directory: where resumable state is kept (None: no resuming).
        run_config: what identifies the run (model, weights, data, n...), part of the state key.
        progress: optional ``callback(stage, done, total)``.

    Returns:
        One row per modality and threat (``task`` "zero-shot", ``attack`` the ensemble name).
    """
    settings = settings or RobustSettings()
    modalities = list(modalities or benchmark.modalities)
    threats = sorted(threats, key=lambda threat: (threat.norm, threat.eps))
    rows = []
    for modality in modalities if benchmark.class_names else ():  # captions only: caption rows are attacked
        data = benchmark.data[modality]
        centers = benchmark_centers(encoder, benchmark, modality)
        spec = encoder.input_spec(modality)
        clean_scores = center_scores(
            embed_all(encoder, modality, data.inputs, batch_size=settings.batch_size, shard=True), centers
        )
        clean_top1, clean_top5 = (float(hit.float().mean()) for hit in top_hits(clean_scores, data.labels))
        checker = (
            SanityChecker(encoder, modality, data.inputs, data.labels, centers, settings) if settings.checks else None
        )
        modality_rows = []
        for threat in threats:
            config = (run_config or {}) | {
                "modality": modality.value,
                "threat": str(threat),
                "norm": threat.norm,
                "eps": threat.eps,
                "steps": settings.steps,
                "ensemble": settings.ensemble.attack_names,
                "square": settings.square_queries,
                "seed": settings.seed,
                "n": len(data),
                "checks": [settings.checks, settings.check_samples],
                "batch_size": settings.batch_size,
                # float32 runs keep the key they had before precision was a setting
                **({} if settings.precision == "float32" else {"precision": settings.precision}),
                **({} if settings.top5 else {"top5": False}),
                "centers": centers_fingerprint(centers),  # class names, templates and text tower, by what they give
            }
            path = (
                None
                if state_directory is None
                else state_directory / f"{modality.value}-{threat.norm}-{threat.eps:.8f}{rank_suffix()}.json"
            )
            state = RunState(path, config)
            worst, square = evaluate_modality_threat(
                encoder, modality, data.inputs, data.labels, centers, threat, settings, state=state, progress=progress
            )
            row = robust_row(
                modality,
                threat,
                spec.range,
                worst,
                clean_top1,
                clean_top5,
                settings,
                square,
                num_classes=len(benchmark.class_names),
            )
            if checker is not None:
                row["flags"], row["checks"] = checker.check_threat(threat, row, state)
            if worst.disagreements:
                row["flags"].append("bf16-disagrees")  # the float32 verdicts stand; bfloat16 steered the attack
            modality_rows.append(row)
        if checker is not None:
            checker.check_sweep(modality_rows)
        rows.extend(modality_rows)
    return rows


def rank_suffix() -> str:
    """Each rank of a launched run keeps its own state file; rank 0's is the one a single process uses."""
    world = distributed.current()
    return "" if world.main else f".rank{world.rank}"


def centers_fingerprint(centers: torch.Tensor) -> str:
    """What the centers are, to 4 decimals: other prompts change them far more, thread counts far less."""
    rounded = torch.round(centers.detach().float().cpu() * 1e4).to(torch.int32).contiguous()
    return hashlib.sha256(rounded.numpy().tobytes()).hexdigest()[:16]
