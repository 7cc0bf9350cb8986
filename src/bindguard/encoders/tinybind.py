"""TinyBind: the embedded default encoder, seven perceptual modalities plus text, no GPU or network needed.

Real pretrained parts, frozen: all-MiniLM-L6-v2 (text, the binding center) and an ImageNet
EfficientNet-Lite0 trunk shared by image, video frames, depth, thermal, event frames and audio
log-mel inputs. Trained parts, shipped as safetensors: one projection head per modality and a small
PointNet. The event head was bound after the others, to the frozen image head and text centers (as
ImageBind binds a modality to frozen towers), and ships in a file of its own
(``tinybind-event.safetensors``) so that the other towers' weights, and the calibrations made for
them, stay exactly as they were. ``tinybind train`` writes all heads in one file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bindguard._types import Modality
from bindguard.encoders.base import Encoder, non_finite_tensor, state_mismatch
from bindguard.encoders.efficientnet_lite import load_pretrained_lite0
from bindguard.encoders.fusion import optimize_frozen
from bindguard.encoders.logmel import LogMel
from bindguard.encoders.pointnet import PointNet
from bindguard.encoders.text_minilm import MINILM_DIM, MiniLMText
from bindguard.encoders.vision_trunk import TRUNK_DIM, VisionTrunk
from bindguard.errors import ConfigError, DataError
from bindguard.modalities import (
    InputSpec,
    audio_spec,
    depth_spec,
    event_spec,
    image_spec,
    point_spec,
    thermal_spec,
    video_spec,
)

WEIGHTS_FORMAT = "bindguard-tinybind/1"
EVENT_WEIGHTS_FORMAT = "bindguard-tinybind-event/1"
TRUNK_MODALITIES = (
    Modality.IMAGE,
    Modality.VIDEO,
    Modality.AUDIO,
    Modality.DEPTH,
    Modality.THERMAL,
    Modality.EVENT,
)
EVENT_HEAD = "heads.event."
# An event tensor becomes a 3-channel frame for the trunk: mean ON density, mean OFF density, and
# densities weighted by recency (later bins count more). These roughly standardise such frames
# (measured on the built-in training split: means about 0.05, spreads about 0.12).
EVENT_FRAME_MEAN = 0.05
EVENT_FRAME_STD = 0.12
# Trunk batches above this many frames run in chunks: the expanded activations of one large batch
# overflow the CPU caches. A forward+backward of 64 video clips (256 frames) took 10.5 ms per clip in
# one piece and 6.8 ms in chunks of 64 frames; a forward alone 1.3 ms and 0.8 ms. The function is
# the same, and so are its bits: oneDNN computes each frame alike in any batch (checked on 256
# frames; `tinybind train`'s cached features, and the weights trained on them, are unchanged).
TRUNK_CHUNK = 64
# The scale of TinyBind's training loss (bindguard.training.tinybind.TrainRecipe), for weights whose
# metadata does not record it: the centers are close (cosine ~0.8), so CLIP's 100 would be far too sharp.
DEFAULT_TRAINING_LOGIT_SCALE = 30.0


@dataclass(frozen=True)
class TinyBindConfig:
    """Sizes of TinyBind's raw inputs and trained parts."""

    canvas: int = 32  # raw image side, pixels
    frames: int = 4
    event_bins: int = 4
    points: int = 256
    sample_rate: int = 16_000
    audio_samples: int = 16_000  # one second
    n_mels: int = 64
    backbone_size: int = 64  # pixel inputs are resized to this before the trunk
    head_hidden: int = 512
    embed_dim: int = MINILM_DIM


def projection_head(config: TinyBindConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(TRUNK_DIM, config.head_hidden), nn.GELU(), nn.Linear(config.head_hidden, config.embed_dim)
    )


class TinyBind(Encoder):
    """The embedded default. Build it with ``create_encoder("tinybind")``."""

    name = "tinybind"
    modalities = (*TRUNK_MODALITIES[:-1], Modality.POINT, Modality.EVENT, Modality.TEXT)

    def __init__(self, config: TinyBindConfig | None = None, *, trunk: VisionTrunk | None = None):
        super().__init__()
        self.config = config = config or TinyBindConfig()
        self.embed_dim = config.embed_dim
        self.trunk = trunk or VisionTrunk(load_pretrained_lite0())
        self.log_mel = LogMel(sample_rate=config.sample_rate, n_mels=config.n_mels)
        self.heads = nn.ModuleDict(
            {m.value: projection_head(config) for m in TRUNK_MODALITIES if m is not Modality.EVENT}
        )
        self.point_net = PointNet(config.embed_dim)
        # built last, so that the parts before it draw the same initial weights as before it existed
        self.heads[Modality.EVENT.value] = projection_head(config)
        # log-mel standardisation constants, measured on the training clips
        self.register_buffer("audio_mean", torch.zeros(()))
        self.register_buffer("audio_std", torch.ones(()))
        self._text: MiniLMText | None = None  # loaded on first use: it is the slowest part to build
        self.recipe: dict = {}
        self._specs = {
            Modality.IMAGE: image_spec(config.canvas, config.canvas),
            Modality.VIDEO: video_spec(config.frames, config.canvas, config.canvas),
            Modality.AUDIO: audio_spec(config.audio_samples, config.sample_rate),
            Modality.POINT: point_spec(config.points),
            Modality.DEPTH: depth_spec(config.canvas, config.canvas),
            Modality.THERMAL: thermal_spec(config.canvas, config.canvas),
            Modality.EVENT: event_spec(config.event_bins, config.canvas, config.canvas),
        }

    @property
    def text_identity(self) -> str:
        # the text tower is the packaged MiniLM whatever trained parts are loaded: one center cache for all
        return "sentence-transformers/all-MiniLM-L6-v2:mean-pool"

    def weights_fingerprint(self) -> str:
        """The hash of the trained-parts file loaded (the frozen pretrained parts come from pinned packages)."""
        return self.__dict__.get("_fingerprint") or super().weights_fingerprint()

    @property
    def identity(self) -> str:
        """``tinybind@<file hash>``, plus ``+event@<hash>`` when the event head came from a file of its own."""
        event = self.__dict__.get("_event_fingerprint")
        return super().identity + (f"+event@{event}" if event else "")

    def identity_for(self, modalities: Sequence[Modality]) -> str:
        """The identity of the weights ``modalities`` use: without the event file's hash when event is not among them."""
        if Modality.EVENT in modalities or not self.__dict__.get("_event_fingerprint"):
            return self.identity
        return super().identity

    def logit_scale(self, modality: Modality | str) -> float:
        """The scale TinyBind's heads were trained with (``TrainRecipe.logit_scale``, in the weights' recipe)."""
        self.check_modality(modality)
        return float(self.recipe.get("logit_scale", DEFAULT_TRAINING_LOGIT_SCALE))

    def num_parameters(self) -> int:
        """Every parameter, the lazily built text tower included (it is built here to be counted)."""
        text = self.text_tower
        own = sum(p.numel() for name, p in self.named_parameters() if not name.startswith("_text."))
        return own + sum(p.numel() for p in text.parameters())

    def log_floor(self, modality: Modality) -> tuple[str, int] | None:
        """Audio: the log-mel front end's floor, one per mel band."""
        return ("log_mel.floor", self.config.n_mels) if self.check_modality(modality) is Modality.AUDIO else None

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            raise DataError("text has no tensor input spec: it is given as a list of strings")
        return self._specs[modality]

    @property
    def text_tower(self) -> MiniLMText:
        if self._text is None:
            self._text = MiniLMText().to(self.audio_mean.device)
            self._text.requires_grad_(False)
        return self._text

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.backbone_size
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def trunk_input(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        """Differentiable raw input -> normalised (B', 3, H, W) trunk input (video: B' = B * T)."""
        spec = self._specs[modality]
        if modality is Modality.IMAGE:
            return spec.normalize(self._resize(x))
        if modality is Modality.VIDEO:
            frames = x.flatten(0, 1)  # (B*T, 3, H, W)
            return spec.normalize(self._resize(frames))
        if modality in (Modality.DEPTH, Modality.THERMAL):
            return spec.normalize(self._resize(x)).expand(-1, 3, -1, -1)
        if modality is Modality.AUDIO:
            spectrogram = (self.log_mel(x) - self.audio_mean) / self.audio_std  # (B, mels, frames)
            return spectrogram.flip(1).unsqueeze(1).expand(-1, 3, -1, -1)  # low frequencies at the bottom
        if modality is Modality.EVENT:  # (B, T, 2, H, W) -> (B, 3, H, W): ON, OFF, recency-weighted
            recency = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device) / x.shape[1]
            on_off = x.mean(1)
            recent = (x.sum(2) * recency.view(1, -1, 1, 1)).mean(1, keepdim=True)
            frame = torch.cat([on_off, recent], 1)
            return (self._resize(frame) - EVENT_FRAME_MEAN) / EVENT_FRAME_STD
        raise DataError(f"{modality.value} does not go through the vision trunk")

    def trunk_features(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        """(B, TRUNK_DIM) frozen-trunk features of a raw batch; video averages its frames."""
        inputs = self.trunk_input(modality, x)
        if inputs.shape[0] > TRUNK_CHUNK:
            features = torch.cat([self.trunk(chunk) for chunk in inputs.split(TRUNK_CHUNK)])
        else:
            features = self.trunk(inputs)
        if modality is Modality.VIDEO:
            features = features.view(x.shape[0], x.shape[1], -1).mean(1)
        return features

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.text_tower(x)
        if modality is Modality.POINT:
            return self.point_net(x)
        return self.heads[modality.value](self.trunk_features(modality, x))

    # --- the trained parts -------------------------------------------------------------------

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors ``tinybind train`` produces: heads, PointNet and audio statistics."""
        state = {f"heads.{k}": v for k, v in self.heads.state_dict().items()}
        state |= {f"point_net.{k}": v for k, v in self.point_net.state_dict().items()}
        state |= {"audio_mean": self.audio_mean, "audio_std": self.audio_std}
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def save_trained(self, path: Path, *, recipe: dict) -> None:
        """Write the trained parts as safetensors (atomically), with the config and recipe as metadata."""
        path = Path(path)
        temporary = path.with_name(path.name + ".partial")
        metadata = {"format": WEIGHTS_FORMAT, "config": json.dumps(asdict(self.config)), "recipe": json.dumps(recipe)}
        # half precision halves the shipped file; the accuracy cost is below 0.1 point
        state = {k: v.half() if v.is_floating_point() and v.dim() > 0 else v for k, v in self.trained_state().items()}
        save_file(state, str(temporary), metadata=metadata)
        temporary.replace(path)

    def load_trained(self, path: Path) -> dict:
        """Load trained parts written by ``save_trained``; returns the recipe.

        Raises:
            DataError: for a missing, corrupt or mismatched file.
        """
        path = Path(path)
        if path.is_dir():
            raise DataError(
                f"TinyBind weights {path} is a folder; give the .safetensors file written by tinybind train"
            )
        if not path.is_file():
            raise DataError(f"TinyBind weights not found at {path}; fix: bindguard tinybind train --out {path}")
        try:
            state = load_file(str(path))
            with open(path, "rb") as handle:
                header_size = int.from_bytes(handle.read(8), "little")
                metadata = json.loads(handle.read(header_size)).get("__metadata__", {})
        except (SafetensorError, OSError, ValueError) as error:
            raise DataError(
                f"TinyBind weights at {path} are corrupt ({error}); fix: bindguard tinybind train --out {path}"
            ) from error
        if metadata.get("format") != WEIGHTS_FORMAT:
            raise DataError(
                f"{path} is not a TinyBind weights file (format {metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r})"
            )
        try:
            recipe = json.loads(metadata.get("recipe", "{}"))
        except ValueError as error:
            raise DataError(
                f"TinyBind weights at {path}: metadata 'recipe' is not JSON ({error}); fix: train again"
            ) from None
        if not isinstance(recipe, dict):
            raise DataError(f"TinyBind weights at {path}: metadata 'recipe' must be a JSON object; fix: train again")
        scale = recipe.get("logit_scale", DEFAULT_TRAINING_LOGIT_SCALE)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise DataError(
                f"TinyBind weights at {path}: recipe 'logit_scale' must be a finite number > 0, got {scale!r}; "
                "fix: train again"
            )
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        expected = self.trained_state()
        with_event = any(k.startswith(EVENT_HEAD) for k in state)
        if not with_event:  # trained before the event head: every other part, and no event until one is bound
            expected = {k: v for k, v in expected.items() if not k.startswith(EVENT_HEAD)}
        mismatch = state_mismatch(expected, state)
        if mismatch:
            raise DataError(
                f"TinyBind weights at {path} do not fit this model ({mismatch}); fix: bindguard tinybind train --out {path}"
            )
        broken = non_finite_tensor(state)
        problem = "holds NaN or infinite values"
        if broken is None and not bool((state["audio_std"] > 0).all()):
            broken, problem = "audio_std", "is not positive (it divides the log-mel features)"
        if broken is not None:
            raise DataError(
                f"TinyBind weights at {path}: tensor {broken!r} {problem}; fix: bindguard tinybind train --out {path}"
            )
        self.heads.load_state_dict(
            {k[len("heads.") :]: v for k, v in state.items() if k.startswith("heads.")}, strict=with_event
        )
        self.__dict__["_event_bound"] = with_event
        self.point_net.load_state_dict(
            {k[len("point_net.") :]: v for k, v in state.items() if k.startswith("point_net.")}
        )
        self.audio_mean.copy_(state["audio_mean"])
        self.audio_std.copy_(state["audio_std"])
        self.__dict__["_fingerprint"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return recipe

    @property
    def event_bound(self) -> bool:
        """Whether the event head holds trained weights (from the trained-parts file or an event file)."""
        return bool(self.__dict__.get("_event_bound"))

    def save_event_tower(self, path: Path, *, recipe: dict) -> None:
        """Write the event head alone (``load_event_tower`` reads it), atomically, in half precision."""
        path = Path(path)
        temporary = path.with_name(path.name + ".partial")
        state = {k: v.half() for k, v in self.trained_state().items() if k.startswith(EVENT_HEAD)}
        save_file(state, str(temporary), metadata={"format": EVENT_WEIGHTS_FORMAT, "recipe": json.dumps(recipe)})
        temporary.replace(path)

    def load_event_tower(self, path: Path) -> dict:
        """Bind the event head written by ``save_event_tower`` onto these trained parts; returns its recipe.

        Raises:
            DataError: for a missing, corrupt, mismatched or non-finite file.
        """
        path = Path(path)
        fix = "fix: bindguard tinybind train (it writes the event head with the others)"
        try:
            with open(path, "rb") as handle:
                header_size = int.from_bytes(handle.read(8), "little")
                metadata = json.loads(handle.read(header_size)).get("__metadata__", {})
            state = {k: v.float() for k, v in load_file(str(path)).items()}
            recipe = json.loads(metadata.get("recipe", "{}"))
        except (SafetensorError, OSError, ValueError) as error:
            raise DataError(f"TinyBind event weights at {path} are unreadable ({error}); {fix}") from error
        if metadata.get("format") != EVENT_WEIGHTS_FORMAT:
            raise DataError(
                f"{path} is not a TinyBind event-head file (format {metadata.get('format')!r}, "
                f"expected {EVENT_WEIGHTS_FORMAT!r}); {fix}"
            )
        expected = {k: v for k, v in self.trained_state().items() if k.startswith(EVENT_HEAD)}
        mismatch = state_mismatch(expected, state)
        broken = non_finite_tensor(state)
        if mismatch or broken:
            problem = mismatch or f"tensor {broken!r} holds NaN or infinite values"
            raise DataError(f"TinyBind event weights at {path} do not fit ({problem}); {fix}")
        self.heads[Modality.EVENT.value].load_state_dict({k[len(EVENT_HEAD) :]: v for k, v in state.items()})
        self.__dict__["_event_bound"] = True
        self.__dict__["_event_fingerprint"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return recipe if isinstance(recipe, dict) else {}

    def drop_unbound_event(self) -> None:
        """Without trained event weights, TinyBind offers no event modality (rather than a random head)."""
        if not self.event_bound and Modality.EVENT.value in self.heads:
            del self.heads[Modality.EVENT.value]
            self.modalities = tuple(m for m in type(self).modalities if m is not Modality.EVENT)


def shipped_weights_path() -> Path:
    """The trained parts that ship inside the package."""
    return Path(str(resources.files("bindguard.encoders") / "weights" / "tinybind.safetensors"))


def shipped_event_weights_path() -> Path:
    """The event head that ships inside the package, bound to the shipped trained parts."""
    return Path(str(resources.files("bindguard.encoders") / "weights" / "tinybind-event.safetensors"))


def create_tinybind(
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    event_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> TinyBind:
    """Build TinyBind with its shipped trained parts (or ``weights``, also called ``checkpoint``), frozen, in eval mode.

    ``event_weights`` binds an event head written by ``save_event_tower`` onto trained parts that
    hold none; the shipped parts come with the shipped event head. Without one, no event modality.
    """
    if weights is not None and checkpoint is not None and Path(weights) != Path(checkpoint):
        raise ConfigError(f"give TinyBind's trained parts once: weights={weights} or checkpoint={checkpoint}")
    weights = weights if weights is not None else checkpoint
    model = TinyBind()
    model.recipe = model.load_trained(Path(weights) if weights else shipped_weights_path())
    if event_weights is None and weights is None and shipped_event_weights_path().is_file():
        event_weights = shipped_event_weights_path()
    if event_weights is not None:
        if model.event_bound:
            raise ConfigError(f"TinyBind weights {weights} already hold an event head; leave out event_weights")
        model.load_event_tower(Path(event_weights))
    model.drop_unbound_event()
    model.requires_grad_(False)
    model.eval()
    # the frozen trunk computes the same function with BatchNorm folded into its convolutions and
    # channels-last weights, at about half the cost of a forward+backward (benchmarks/attack_speed.py)
    model.trunk = optimize_frozen(model.trunk)
    return model.to(device)
