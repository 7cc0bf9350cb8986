"""LanguageBind (image, video, audio, depth, thermal, text) on transformers' CLIP classes, from its Hugging Face folders.

LanguageBind (PKU-YuanGroup, MIT) binds five modality towers to one CLIP text tower. Each tower
is published as its own Hugging Face folder, a whole-model save of a CLIP-style model (text tower,
vision tower, two projections, ``logit_scale``):

    LanguageBind/LanguageBind_Image     LanguageBind/LanguageBind_Video_FT   LanguageBind/LanguageBind_Audio_FT
    LanguageBind/LanguageBind_Depth     LanguageBind/LanguageBind_Thermal

Checkpoint layout (``create_languagebind(checkpoint=DIR)``): either one tower folder, or a folder
holding tower folders (any names, any subset), each with ``config.json`` and its weights
(``model.safetensors`` or ``pytorch_model.bin``, sharded or not); the text tower's folder also
needs ``vocab.json`` and ``merges.txt``. A folder's modality is its config's ``model_type``
(``LanguageBindImage``, ``LanguageBindVideo``, ...), else a modality named in the folder's name.

The text tower comes from the Image folder when there is one (upstream loads its tokenizer from
LanguageBind_Image), otherwise from the first of video, audio, depth, thermal; ``text_from``
chooses another. The text weights of the other folders are checked but not used.

Loading is our own, not ``from_pretrained``: the keys are mapped (``encoder.base_model.model.``
and ``.base_layer.`` stripped: both peft layouts), LoRA adapters are merged as
``W += (lora_alpha / lora_r) * B @ A`` with r and alpha from the folder's config, and then every
key must be used and every weight found: anything else is refused, naming the first keys (peft
version drift otherwise leaves the attention weights random with only a warning).

Raw inputs and preprocessing (all differentiable, all deterministic):

- image: (B, 3, 224, 224) RGB in [0, 1]; CLIP mean/std. Resizing and cropping are the caller's.
- video: (B, 8, 3, 224, 224), 8 frames evenly spaced over the clip, in [0, 1]; CLIP mean/std per
  frame (upstream's random horizontal flip at inference is left out).
- thermal: (B, 1, 224, 224) in [0, 1]; repeated to 3 channels, CLIP mean/std.
- depth: (B, 1, 224, 224) depth in metres in [0, max_depth] (millimetre maps: divide by 1000 first);
  clipped to [0.01, max_depth], divided by max_depth, repeated to 3 channels, CLIP mean/std.
- audio: (B, S) mono waveform in [-1, 1] at the config's ``audio_sample_rate`` (16 kHz), S set by
  ``audio_seconds``; Kaldi log-mel filter banks (``num_mel_bins``), fixed to ``target_length``
  frames by ``languagebind_audio.mel_image`` (tiled, or three chunks at fixed starts), then
  ``(x - audio_mean) / (2 * audio_std)`` with the values of the folder's config.json.
- text: CLIP BPE, 77 tokens, pooled at the end-of-text token.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bindguard._optional import require
from bindguard._types import Modality
from bindguard.encoders.base import Encoder, fingerprint_tensors, non_finite_tensor, state_mismatch
from bindguard.encoders.checkpoints import read_state_dict
from bindguard.encoders.languagebind_audio import fbank, frame_sizes, mel_image
from bindguard.encoders.languagebind_video import TemporalLayer, spatial_block
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.modalities import InputSpec, audio_spec, image_spec, video_spec
from bindguard.modalities.pixels import PLANE_AXES

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOWERS = (Modality.IMAGE, Modality.VIDEO, Modality.AUDIO, Modality.DEPTH, Modality.THERMAL)  # text-source order
MODEL_TYPES = {f"LanguageBind{m.value.capitalize()}": m for m in TOWERS}
HUB_REPOS = {
    Modality.IMAGE: "LanguageBind/LanguageBind_Image",
    Modality.VIDEO: "LanguageBind/LanguageBind_Video_FT",
    Modality.AUDIO: "LanguageBind/LanguageBind_Audio_FT",
    Modality.DEPTH: "LanguageBind/LanguageBind_Depth",
    Modality.THERMAL: "LanguageBind/LanguageBind_Thermal",
}
# what LanguageBind_Audio was trained with; the config default (0.5 / 0.5) is not it
TRAINED_AUDIO_MEAN, TRAINED_AUDIO_STD = -4.2677393, 4.5689974
MIN_DEPTH = 0.01  # metres
PEFT_PREFIX = "encoder.base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<adapter>[^.]+)\.weight$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("vocab.json", "merges.txt")
# CLIP config defaults, for fields a config.json written with only the differences leaves out
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


def _missing_message() -> str:
    repos = ", ".join(HUB_REPOS.values())
    return (
        "LanguageBind has no bundled weights; download the tower folders you need from Hugging Face "
        f"({repos}) into one folder and pass it: --checkpoint DIR (Python: checkpoint=DIR)"
    )


# --- reading a folder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TowerFolder:
    """One LanguageBind Hugging Face folder: its modality, config and the settings read from it.

    Attributes:
        modality: the tower it holds.
        path: the folder.
        config: the parsed ``config.json``.
        vision: ``config["vision_config"]`` (with ``vision_config_dict`` applied over it).
        text: ``config["text_config"]`` likewise.
    """

    modality: Modality
    path: Path
    config: dict
    vision: dict
    text: dict

    @property
    def repo(self) -> str:
        return HUB_REPOS[self.modality]

    def field(self, name: str, default: object = None) -> object:
        return self.vision.get(name, default)

    def number(self, name: str, default: float, *, whole: bool = False, section: str = "vision_config") -> float:
        """A numeric config field (``default`` when absent), refused in one line when it is not a finite number.

        Raises:
            DataError: naming the file and the field.
        """
        fields = {"vision_config": self.vision, "text_config": self.text}.get(section, self.config)
        value = fields.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or (whole and value != int(value))
        ):
            kind = "a whole number" if whole else "a finite number"
            where = f"{section}.{name}" if section in ("vision_config", "text_config") else name
            raise DataError(
                f"LanguageBind config {self.path / 'config.json'}: {where} must be {kind}, got {value!r}; "
                f"fix: give the config.json from Hugging Face {self.repo}"
            )
        return int(value) if whole else float(value)

    @property
    def lora(self) -> tuple[int, float]:
        """(r, alpha) of the LoRA adapters, from the config (LanguageBind's defaults: 2, 16)."""
        return int(self.number("lora_r", 2, whole=True)), self.number("lora_alpha", 16)

    @property
    def projection_dim(self) -> int:
        return int(self.number("projection_dim", 512, whole=True, section="top"))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"LanguageBind config {path} cannot be read as JSON ({error})") from None
    if not isinstance(value, dict):
        raise DataError(f"LanguageBind config {path} must hold a JSON object, got {type(value).__name__}")
    return value


def read_folder(path: Path) -> TowerFolder:
    """Read one tower folder's config.json and decide its modality.

    Raises:
        DataError: for a folder without config.json, a config that is not JSON, or no known modality.
    """
    config_path = path / "config.json"
    if not config_path.is_file():
        raise DataError(f"LanguageBind folder {path} has no config.json; give the folder downloaded from Hugging Face")
    config = _read_json(config_path)
    model_type = config.get("model_type")
    modality = MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if modality is None:
        named = [m for m in TOWERS if m.value in path.name.lower()]
        if len(named) != 1:
            allowed = ", ".join(MODEL_TYPES)
            raise DataError(
                f"LanguageBind folder {path}: model_type {model_type!r} is none of {allowed}, and the folder name "
                "names no single modality; fix: give the unmodified config.json"
            )
        modality = named[0]
    sections = {}
    for section in ("vision_config", "text_config"):
        merged = dict(config.get(section) or {})
        merged.update(config.get(f"{section}_dict") or {})  # the older name wins, as in LanguageBind's config
        sections[section] = merged
    return TowerFolder(modality, path, config, sections["vision_config"], sections["text_config"])


def find_towers(checkpoint: Path) -> dict[Modality, TowerFolder]:
    """The tower folders under ``checkpoint``: the folder itself when it holds config.json, else its sub-folders.

    Raises:
        DataError: for a missing path, a folder with no tower folders, or two folders of one modality.
    """
    if not checkpoint.exists():
        raise DataError(f"LanguageBind checkpoint {checkpoint} not found; {_missing_message()}")
    if not checkpoint.is_dir():
        raise DataError(f"LanguageBind checkpoint {checkpoint} is not a folder; give the folder holding config.json")
    if (checkpoint / "config.json").is_file():
        folder = read_folder(checkpoint)
        return {folder.modality: folder}
    towers: dict[Modality, TowerFolder] = {}
    for child in sorted(p for p in checkpoint.iterdir() if (p / "config.json").is_file()):
        folder = read_folder(child)
        if folder.modality in towers:
            raise DataError(
                f"LanguageBind checkpoint {checkpoint} holds two {folder.modality.value} towers "
                f"({towers[folder.modality].path.name}, {child.name}); keep one"
            )
        towers[folder.modality] = folder
    if not towers:
        raise DataError(
            f"LanguageBind checkpoint {checkpoint} holds no tower folder (a sub-folder with config.json); "
            f"{_missing_message()}"
        )
    return {m: towers[m] for m in TOWERS if m in towers}


def read_weights(folder: TowerFolder) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's weights as float32 on the CPU (``checkpoints.read_state_dict``: safetensors,
    shards, or ``torch.save`` files read with ``weights_only=True``, so nothing but tensors is unpickled).

    Raises:
        DataError: for missing, unreadable, non-tensor or non-finite weights.
    """
    named = [folder.path / name for name in WEIGHT_FILES if (folder.path / name).is_file()]
    # Hugging Face's own names first, so that another .bin beside them (training_args.bin) is not a second candidate
    target = folder.path if not named or named[0].name.endswith(".index.json") else named[0]
    if not named and not any(p.suffix in (".safetensors", ".bin", ".pt", ".pth") for p in folder.path.iterdir()):
        raise DataError(
            f"LanguageBind folder {folder.path} has no weights (looked for {', '.join(WEIGHT_FILES)}); "
            f"download them from Hugging Face {folder.repo}"
        )
    state = read_state_dict(target, strip_prefixes=())
    broken = non_finite_tensor(state)
    if broken is not None:
        raise DataError(f"LanguageBind weights in {folder.path}: tensor {broken!r} holds NaN or infinite values")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# --- the key mapper ---------------------------------------------------------------------------------


def map_keys(
    state: Mapping[str, torch.Tensor], *, lora_r: int, lora_alpha: float, source: str
) -> dict[str, torch.Tensor]:
    """LanguageBind checkpoint keys -> plain transformers CLIP keys, LoRA merged.

    Both peft layouts map to one: before 0.7 a wrapped projection keeps ``q_proj.weight``; from 0.7
    it is ``q_proj.base_layer.weight``; either has ``q_proj.lora_{A,B}.<adapter>.weight`` beside it,
    and the whole wrapped encoder sits under ``encoder.base_model.model.``. Each adapter is merged
    as peft merges it, ``W + (B @ A) * (alpha / r)``. ``*.embeddings.position_ids`` (index buffers
    that older transformers saved) are dropped. With ``lora_r == 0`` nothing is merged, so LoRA
    keys are left over, and the caller's key check refuses them.

    Raises:
        DataError: for a key that appears in both layouts, more than one adapter, or an adapter
            whose rank is not ``lora_r``.
    """
    plain: dict[str, torch.Tensor] = {}
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    names: set[str] = set()
    for key, tensor in state.items():
        name = key.replace(PEFT_PREFIX, "encoder.").replace(".base_layer.", ".")
        match = LORA_KEY.match(name)
        if match and lora_r > 0:
            adapters.setdefault(match["module"], {})[match["part"]] = tensor
            names.add(match["adapter"])
            continue
        if name.endswith("embeddings.position_ids"):
            continue
        if name in plain:
            raise DataError(f"{source}: key {key!r} appears twice after mapping (both peft layouts in one file?)")
        plain[name] = tensor
    if len(names) > 1:
        raise DataError(f"{source}: LoRA adapters {sorted(names)}; a LanguageBind tower has one")
    scaling = lora_alpha / lora_r if lora_r > 0 else 0.0
    for module, parts in sorted(adapters.items()):
        weight = plain.get(f"{module}.weight")
        if set(parts) != {"A", "B"} or weight is None:
            for part, tensor in parts.items():  # left unmatched: the key check names them
                plain[f"{module}.lora_{part}.{next(iter(names))}.weight"] = tensor
            continue
        down, up = parts["A"], parts["B"]  # (r, in), (out, r)
        if down.shape[0] != lora_r or up.shape[1] != lora_r:
            raise DataError(
                f"{source}: LoRA of {module} has rank {down.shape[0]}, but config.json gives lora_r={lora_r}; "
                "fix: give the config.json that came with these weights"
            )
        plain[f"{module}.weight"] = weight + (up @ down) * scaling
    return plain


# --- the towers -------------------------------------------------------------------------------------


class PatchEmbedding(nn.Module):
    """Class token + patch tokens + learned positions on any (rows x columns) grid of square patches.

    transformers' ``CLIPVisionEmbeddings`` only takes square inputs; the audio tower's mel image
    is 112 x 1036, an 8 x 74 grid (593 positions). Parameter names follow CLIP's.
    """

    def __init__(self, width: int, patch: int, grid: tuple[int, int], channels: int = 3):
        super().__init__()
        self.grid = grid
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.patch_embedding = nn.Conv2d(channels, width, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = nn.Embedding(1 + grid[0] * grid[1], width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + rows * columns, width)."""
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (N, rows * columns, width)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class VisionTower(nn.Module):
    """A LanguageBind modality tower: a transformers ``CLIPVisionModel`` with our patch embedding
    (and, for video, temporal layers), plus ``visual_projection``; state keys are the checkpoint's.

    Args:
        folder: the tower's folder (its vision config sets every size).
        time_mlp: the checkpoint's temporal layers have a feed-forward too.
    """

    def __init__(self, folder: TowerFolder, *, time_mlp: bool = False):
        super().__init__()
        transformers = require("transformers", extra="languagebind")
        config = _clip_config(transformers.CLIPVisionConfig, folder, "vision_config", VISION_DEFAULTS)
        clip = transformers.CLIPVisionModel(config)
        self.vision_model = getattr(clip, "vision_model", clip)  # transformers 4 nests the transformer one level down
        self.vision_model.embeddings = PatchEmbedding(config.hidden_size, config.patch_size, tower_grid(folder))
        self.frames = 1
        if folder.field("add_time_attn", False):
            self.frames = int(folder.number("num_frames", 1, whole=True))
            modeling = require("transformers.models.clip.modeling_clip", extra="languagebind")
            layers = self.vision_model.encoder.layers
            for index, layer in enumerate(layers):
                layers[index] = TemporalLayer(
                    layer,
                    lambda: modeling.CLIPAttention(config),
                    make_mlp=(lambda: modeling.CLIPMLP(config)) if time_mlp else None,
                    frames=self.frames,
                    width=config.hidden_size,
                    eps=config.layer_norm_eps,
                )
        self.visual_projection = nn.Linear(config.hidden_size, folder.projection_dim, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B * frames, 3, H, W) normalised pixels -> (B, projection_dim); frames averaged after the final norm."""
        model = self.vision_model
        hidden = model.pre_layrnorm(model.embeddings(pixels))  # (B*T, L, D)
        for layer in model.encoder.layers:
            hidden = layer(hidden) if isinstance(layer, TemporalLayer) else spatial_block(layer, hidden)
        pooled = model.post_layernorm(hidden[:, 0])  # (B*T, D)
        return self.visual_projection(pooled.view(-1, self.frames, pooled.shape[-1]).mean(1))  # (B, P)


class TextTower(nn.Module):
    """transformers' ``CLIPTextModel`` + ``text_projection``, pooled at the end-of-text token (the highest id)."""

    def __init__(self, folder: TowerFolder, *, tokenizer: bool = True):
        super().__init__()
        transformers = require("transformers", extra="languagebind")
        # the legacy token ids make transformers' own pooler agree with ours (argmax of the ids)
        config = _clip_config(
            transformers.CLIPTextConfig,
            folder,
            "text_config",
            TEXT_DEFAULTS,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
        )
        clip = transformers.CLIPTextModel(config)
        self.text_model = getattr(clip, "text_model", clip)  # transformers 4 nests the transformer one level down
        self.text_projection = nn.Linear(config.hidden_size, folder.projection_dim, bias=False)
        self.max_length = config.max_position_embeddings
        self.tokenizer = _tokenizer(folder) if tokenizer else None

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask), each (B, 77): LanguageBind pads with end-of-text tokens to the full length."""
        tokens = self.tokenizer(
            list(texts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        return tokens["input_ids"], tokens["attention_mask"]

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and attention mask -> (B, projection_dim)."""
        ids, mask = ids.to(self.text_projection.weight.device), mask.to(self.text_projection.weight.device)
        hidden = self.text_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]  # (B, D)
        return self.text_projection(pooled)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """A list of B strings -> (B, projection_dim)."""
        return self.embed_ids(*self.tokenize(texts))


def _clip_config(
    kind: type, folder: TowerFolder, section: str, defaults: Mapping[str, object], **fixed: object
) -> object:
    """A transformers CLIP config of the architecture fields only (LanguageBind's extra fields stay out).

    ``image_size`` is left at its default: the patch grid is ours (``tower_grid``), and upstream
    writes a list there for the audio tower.
    """
    fields = folder.vision if section == "vision_config" else folder.text
    chosen = {}
    for name, default in defaults.items():
        if name == "image_size":
            chosen[name] = default
        elif isinstance(default, (int, float)):
            chosen[name] = folder.number(name, default, whole=isinstance(default, int), section=section)
        else:
            chosen[name] = fields.get(name, default)
    return kind(**chosen, attention_dropout=0.0, **fixed)


def _tokenizer(folder: TowerFolder) -> object:
    missing = [name for name in TOKENIZER_FILES if not (folder.path / name).is_file()]
    if missing:
        raise DataError(
            f"LanguageBind text tower folder {folder.path} lacks {', '.join(missing)}; "
            f"download them from Hugging Face {folder.repo} (or choose another text_from)"
        )
    transformers = require("transformers", extra="languagebind")
    return transformers.CLIPTokenizer.from_pretrained(str(folder.path), local_files_only=True)


def tower_grid(folder: TowerFolder) -> tuple[int, int]:
    """The patch grid: (mel bins, target frames) // patch for audio, image_size // patch otherwise."""
    patch = int(folder.number("patch_size", VISION_DEFAULTS["patch_size"], whole=True))
    if folder.modality is Modality.AUDIO:
        height = int(folder.number("num_mel_bins", 0, whole=True))
        width = int(folder.number("target_length", 0, whole=True))
    else:
        height = width = image_side(folder)
    if patch < 1 or height < patch or width < patch:
        raise DataError(
            f"LanguageBind config {folder.path / 'config.json'}: a {height} x {width} input holds no "
            f"{patch}-pixel patch; fix: give the config.json from Hugging Face {folder.repo}"
        )
    return height // patch, width // patch


def image_side(folder: TowerFolder) -> int:
    """The side of the square input, in pixels (upstream's ``resize_pos`` writes it as ``[side, side]``)."""
    size = folder.field("image_size", VISION_DEFAULTS["image_size"])
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(
            f"LanguageBind config {folder.path / 'config.json'}: vision_config.image_size must be a whole number "
            f"of pixels or [side, side], got {size!r}; fix: give the config.json from Hugging Face {folder.repo}"
        )
    return size


# --- the encoder ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """The constants of each tower's raw-input pipeline, read from its config.json."""

    image_side: int = 224
    frames: int = 8
    sample_rate: int = 16_000
    audio_samples: int = 160_000
    num_mel_bins: int = 112
    target_length: int = 1036
    audio_mean: float = TRAINED_AUDIO_MEAN
    audio_std: float = TRAINED_AUDIO_STD
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        for name in ("image_side", "frames", "sample_rate", "num_mel_bins", "target_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LanguageBind {name} must be >= 1, got {getattr(self, name)}")
        window = frame_sizes(self.sample_rate)[0]
        if self.audio_samples < window:
            raise ConfigError(
                f"LanguageBind audio clips must hold at least one 25 ms frame ({window} samples), "
                f"got {self.audio_samples}; fix: a longer audio_seconds"
            )
        if not (self.audio_std > 0 and math.isfinite(self.audio_std) and math.isfinite(self.audio_mean)):
            raise ConfigError(f"LanguageBind audio_std must be finite and > 0, got {self.audio_std}")
        if not (self.max_depth > MIN_DEPTH and math.isfinite(self.max_depth)):
            raise ConfigError(
                f"LanguageBind max_depth must be a finite number of metres > {MIN_DEPTH}, got {self.max_depth}"
            )


class LanguageBind(Encoder):
    """LanguageBind's towers, frozen, from raw inputs. Build it with ``create_languagebind``.

    Args:
        towers: one ``VisionTower`` per modality loaded.
        text: the text tower.
        logit_scales: exp(``logit_scale``) of each tower's checkpoint; text: that of the text tower's folder.
        preprocessing: the input constants.
    """

    name = "languagebind"

    def __init__(
        self,
        towers: Mapping[Modality, VisionTower],
        text: TextTower,
        *,
        logit_scales: Mapping[Modality, float],
        preprocessing: Preprocessing,
    ):
        super().__init__()
        if not towers:
            raise ConfigError("LanguageBind needs at least one modality tower")
        self.towers = nn.ModuleDict({m.value: tower for m, tower in towers.items()})
        self.text = text
        self.modalities = (*(m for m in TOWERS if m in towers), Modality.TEXT)
        self.embed_dim = text.text_projection.out_features
        self.scales = dict(logit_scales)
        self.preprocessing = p = preprocessing
        side = p.image_side
        self._specs = {
            Modality.IMAGE: image_spec(side, side, mean=CLIP_MEAN, std=CLIP_STD),
            Modality.VIDEO: video_spec(p.frames, side, side, mean=CLIP_MEAN, std=CLIP_STD),
            Modality.AUDIO: audio_spec(p.audio_samples, p.sample_rate),
            Modality.DEPTH: InputSpec(
                Modality.DEPTH,
                "B,1,H,W",
                (1, side, side),
                (0.0, p.max_depth),
                "depth (metres)",
                grid_axes=PLANE_AXES,
                purifier="pixels",
            ),
            # CLIP's constants apply after the plane is repeated to three channels (tower_input)
            Modality.THERMAL: InputSpec(
                Modality.THERMAL,
                "B,1,H,W",
                (1, side, side),
                (0.0, 1.0),
                "normalised temperature",
                grid_axes=PLANE_AXES,
                purifier="pixels",
            ),
        }
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    @property
    def text_identity(self) -> str:
        """Only the text tower decides the semantic centers (hashed once: the weights are frozen)."""
        cached = self.__dict__.get("_text_fingerprint")
        if cached is None:
            cached = self.__dict__["_text_fingerprint"] = fingerprint_tensors(self.text.state_dict())
        return f"{self.name}-text@{cached}"

    def logit_scale(self, modality: Modality | str) -> float:
        """exp(``logit_scale``) of the modality's own checkpoint (LanguageBind trains one per tower)."""
        return self.scales[self.check_modality(modality)]

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            raise UnknownNameError("text has no tensor input spec: it is given as a list of strings")
        return self._specs[modality]

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.clip_mean) / self.clip_std  # (N, 3, H, W)

    def tower_input(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        """Raw batch -> the tower's input: (B', 3, H, W), B' = B * frames for video; differentiable."""
        p = self.preprocessing
        if modality is Modality.IMAGE:
            return self._normalize(x)
        if modality is Modality.VIDEO:
            return self._normalize(x.flatten(0, 1))  # (B*T, 3, H, W)
        if modality is Modality.THERMAL:
            return self._normalize(x.expand(-1, 3, -1, -1))
        if modality is Modality.DEPTH:
            return self._normalize((x.clamp(MIN_DEPTH, p.max_depth) / p.max_depth).expand(-1, 3, -1, -1))
        mel = fbank(x, sample_rate=p.sample_rate, num_mel_bins=p.num_mel_bins)  # (B, frames, bins)
        return (mel_image(mel, p.target_length) - p.audio_mean) / (2 * p.audio_std)  # (B, 3, bins, target)

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            return self.text(x)
        return self.towers[modality.value](self.tower_input(modality, x))


# --- loading ----------------------------------------------------------------------------------------


def _built(make: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """``make()`` holding ``state``, built on the meta device and given the loaded tensors (no random init:
    a ViT-L tower takes seconds to initialise); a module with a buffer the state does not hold is built for real.
    """
    with torch.device("meta"):
        module = make()
    module.load_state_dict(state, assign=True)
    if any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers())):
        module = make()  # e.g. transformers' non-persistent position ids of the text tower
        module.load_state_dict(state)
    return module


def _load_tower(folder: TowerFolder, *, with_text: bool) -> tuple[VisionTower, TextTower | None, float]:
    """Build one folder's vision tower (and its text tower when asked), load the mapped weights, refuse misfits."""
    source = f"LanguageBind {folder.modality.value} checkpoint {folder.path}"
    lora_r, lora_alpha = folder.lora
    state = map_keys(read_weights(folder), lora_r=lora_r, lora_alpha=lora_alpha, source=source)
    time_mlp = any(".temporal_mlp." in key for key in state)
    with torch.device("meta"):  # shapes only; the text weights of every folder are checked, one text tower is built
        expected_vision = VisionTower(folder, time_mlp=time_mlp).state_dict()
        expected_text = TextTower(folder, tokenizer=False).state_dict()
    expected = dict(expected_vision) | dict(expected_text) | {"logit_scale": torch.zeros(())}
    mismatch = state_mismatch(expected, state)
    if mismatch:
        hint = (
            "; LoRA keys are left over because config.json gives lora_r=0"
            if lora_r == 0 and "lora_" in mismatch
            else ""
        )
        raise DataError(
            f"{source}: the weights do not fit a LanguageBind tower after key mapping ({mismatch}){hint}; "
            f"fix: give the unmodified folder from Hugging Face {folder.repo}"
        )
    tower = _built(lambda: VisionTower(folder, time_mlp=time_mlp), {k: state[k] for k in expected_vision})
    text = None
    if with_text:
        text = _built(lambda: TextTower(folder, tokenizer=False), {k: state[k] for k in expected_text})
        text.tokenizer = _tokenizer(folder)
    return tower, text, float(state["logit_scale"].exp())


def _preprocessing(towers: Mapping[Modality, TowerFolder], audio_seconds: float) -> Preprocessing:
    values: dict[str, object] = {}
    sides = {m: image_side(f) for m, f in towers.items() if m is not Modality.AUDIO}
    if len(set(sides.values())) > 1:
        raise DataError(f"LanguageBind towers disagree on image_size ({sides}); give towers of one release")
    if sides:
        values["image_side"] = next(iter(sides.values()))
    if Modality.VIDEO in towers:
        video = towers[Modality.VIDEO]
        if not video.field("add_time_attn", False):
            raise DataError(
                f"LanguageBind video config in {video.path} has add_time_attn false: the video tower needs its "
                "temporal layers; give the unmodified config.json"
            )
        if video.field("clip_type") == "vl_new":
            raise DataError(
                f"LanguageBind video config in {video.path} asks for clip_type 'vl_new' (a 3-D patch embedding with "
                "a class token per frame), which bindguard does not build yet; give the LanguageBind_Video_FT folder"
            )
        values["frames"] = int(video.number("num_frames", 8, whole=True))
    for modality, folder in towers.items():
        if (
            modality is not Modality.VIDEO
            and folder.field("add_time_attn", False)
            and folder.field("num_frames", 1) != 1
        ):
            raise DataError(f"LanguageBind {modality.value} config in {folder.path}: num_frames must be 1")
    if Modality.AUDIO in towers:
        audio = towers[Modality.AUDIO]
        for name in ("num_mel_bins", "target_length", "audio_mean", "audio_std"):
            if audio.field(name) is None or (name != "audio_mean" and not audio.field(name)):
                raise DataError(
                    f"LanguageBind audio config in {audio.path} lacks vision_config.{name} (the trained values: "
                    f"num_mel_bins 112, target_length 1036, audio_mean {TRAINED_AUDIO_MEAN}, audio_std "
                    f"{TRAINED_AUDIO_STD}); fix: give the config.json from Hugging Face {audio.repo}"
                )
            values[name] = audio.number(name, 0, whole=name in ("num_mel_bins", "target_length"))
        values["sample_rate"] = int(audio.number("audio_sample_rate", 16_000, whole=True))
    if Modality.DEPTH in towers:
        values["max_depth"] = towers[Modality.DEPTH].number("max_depth", 10.0)
    rate = int(values.get("sample_rate", 16_000))
    if not (isinstance(audio_seconds, (int, float)) and audio_seconds > 0 and math.isfinite(audio_seconds)):
        raise ConfigError(f"audio_seconds must be a finite number > 0, got {audio_seconds!r}")
    values["audio_samples"] = round(audio_seconds * rate)
    return Preprocessing(**values)


def load_languagebind(
    checkpoint: str | Path,
    *,
    modalities: Sequence[Modality | str] | None = None,
    text_from: Modality | str | None = None,
    audio_seconds: float = 10.0,
) -> LanguageBind:
    """Build LanguageBind from a checkpoint folder (see the module docstring for the layout).

    Args:
        checkpoint: a tower folder, or a folder of tower folders.
        modalities: load only these towers (default: every one found).
        text_from: the folder whose text tower to use (default: image, else the first found).
        audio_seconds: the length of the raw audio clips the encoder takes.

    Raises:
        DataError: for missing or misfitting folders, configs or weights.
        UnknownNameError: for a modality or ``text_from`` that is not among the towers found.
    """
    folders = find_towers(Path(checkpoint))
    if modalities is not None:
        wanted = [Modality.parse(m) for m in modalities]
        absent = [m.value for m in wanted if m not in folders]
        if absent:
            found = ", ".join(m.value for m in folders)
            raise UnknownNameError(
                f"LanguageBind checkpoint {checkpoint} has no {', '.join(absent)} tower; found: {found}"
            )
        folders = {m: f for m, f in folders.items() if m in wanted}
    source = Modality.parse(text_from) if text_from is not None else next(iter(folders))
    if source not in folders:
        raise UnknownNameError(
            f"text_from {source.value!r} is not among the towers loaded; choose from {', '.join(m.value for m in folders)}"
        )
    dims = {m: f.projection_dim for m, f in folders.items()}
    if len(set(dims.values())) > 1:
        raise DataError(f"LanguageBind towers disagree on projection_dim ({dims}); give towers of one release")
    preprocessing = _preprocessing(folders, audio_seconds)
    towers, scales, text = {}, {}, None
    for modality, folder in folders.items():
        towers[modality], loaded_text, scales[modality] = _load_tower(folder, with_text=modality is source)
        text = loaded_text or text
    scales[Modality.TEXT] = scales[source]
    logger.info("LanguageBind text tower from %s", folders[source].path)
    model = LanguageBind(towers, text, logit_scales=scales, preprocessing=preprocessing)
    model.requires_grad_(False)
    return model.eval()


def create_languagebind(
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    modalities: Sequence[Modality | str] | None = None,
    text_from: Modality | str | None = None,
    audio_seconds: float = 10.0,
) -> LanguageBind:
    """Build LanguageBind, frozen and in eval mode, from downloaded Hugging Face folders.

    ``weights`` is the same as ``checkpoint`` (the name the command line passes).
    Other arguments as in ``load_languagebind``.

    Raises:
        DataError: when no checkpoint is given (naming where LanguageBind publishes its towers), and as
            in ``load_languagebind``.
    """
    if checkpoint is not None and weights is not None:
        raise ConfigError("give the LanguageBind folder once: checkpoint= or weights=, not both")
    checkpoint = checkpoint if checkpoint is not None else weights
    if checkpoint is None:
        raise DataError(_missing_message())
    model = load_languagebind(checkpoint, modalities=modalities, text_from=text_from, audio_seconds=audio_seconds)
    return model.to(device)
