"""CLIP on transformers' ``CLIPModel``, from a Hugging Face model folder: image and text.

Images are raw (B, 3, H, W) intensities in [0, 1] at the checkpoint's image size; the mean/std
normalisation runs inside the encoder, so attacks perturb pixels and gradients reach them.
Resizing and cropping are the caller's: give images already at ``input_spec(IMAGE).shape``.

The towers are called directly (``vision_model`` + ``visual_projection``, ``text_model`` +
``text_projection``): ``get_image_features`` returns a tensor in transformers 4 and an output
object in 5, and the direct path is the same in both.

Loading is strict where transformers only warns: every tensor the model needs must be in the
file and every tensor in the file must belong to the model (see ``fit_state``), so a checkpoint
of another architecture cannot load half-random. The folder helpers here serve ``clap.py`` too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bindguard._optional import require
from bindguard._types import Modality
from bindguard.encoders.base import DEFAULT_LOGIT_SCALE, Encoder, fingerprint_tensors, non_finite_tensor
from bindguard.encoders.checkpoints import read_state_dict
from bindguard.errors import ConfigError, DataError, UnknownNameError
from bindguard.modalities import InputSpec, image_spec

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EXTRA = "clip"
# Where CLIP folders in the Hugging Face layout are published (a hint for the missing-checkpoint error).
CLIP_FOLDERS = "openai/clip-vit-base-patch32, openai/clip-vit-large-patch14, laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
SAFETENSORS, SHARD_INDEX, PICKLED = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"


# --- Hugging Face folders (shared with clap.py) ------------------------------------------------


def checkpoint_folder(
    checkpoint: str | Path | None, weights: str | Path | None, *, kind: str, published: str, option: str
) -> Path:
    """The model folder named by ``checkpoint`` (or its alias ``weights``, the CLI's ``--weights``).

    Raises:
        ConfigError: when both are given.
        DataError: when none is given, or it is not a folder.
    """
    if checkpoint is not None and weights is not None:
        raise ConfigError(f"give the {kind} folder once, as checkpoint= or weights=, not both")
    given = checkpoint if checkpoint is not None else weights
    if given is None:
        raise DataError(
            f"{kind} needs a Hugging Face model folder (config.json, model.safetensors or pytorch_model.bin, "
            f"tokenizer files), as published on huggingface.co (e.g. {published}); bindguard downloads nothing: "
            f"fetch one yourself (hf download {published.split(',')[0]} --local-dir DIR) "
            f"and pass {option}"
        )
    folder = Path(given).expanduser()
    if not folder.is_dir():
        state = "is a file; give the folder that holds it" if folder.exists() else "does not exist"
        raise DataError(f"{kind} checkpoint {folder} {state} (config.json + model.safetensors + tokenizer files)")
    return folder


def read_config_json(folder: Path, *, model_type: str, kind: str) -> dict[str, Any]:
    """``config.json`` of a folder, refused unless it describes a ``model_type`` model."""
    path = folder / "config.json"
    if not path.is_file():
        raise DataError(f"{kind} checkpoint {folder} has no config.json; give a Hugging Face model folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path} is not readable JSON ({error})") from None
    found = data.get("model_type") if isinstance(data, dict) else None
    if found != model_type:
        raise DataError(f"{path} describes a {found!r} model, not {model_type!r}; give a {kind} folder")
    return data


def read_state(folder: Path, *, kind: str) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a folder's weights and the file they came from.

    Read in this order: ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``),
    ``pytorch_model.bin`` through ``torch.load(weights_only=True)`` (no code is unpickled).
    """
    for name in (SAFETENSORS, SHARD_INDEX, PICKLED):  # a folder may hold several: this order decides
        if (folder / name).is_file():
            source = folder if name == SHARD_INDEX else folder / name  # the reader finds the shards beside it
            return read_state_dict(source, strip_prefixes=()), str(folder / name)
    raise DataError(f"{kind} checkpoint {folder} has no {SAFETENSORS}, {SHARD_INDEX} or {PICKLED}")


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """``state`` checked against ``model`` and completed: what ``load_state_dict(strict=True)`` takes.

    Refused, naming the tensor: a parameter or floating-point buffer the file lacks, a tensor the
    model does not have, a wrong shape, NaN or infinity. Accepted: integer buffers the file lacks
    (index tables and counters, which the model computes from its config) and buffers the model
    does not save (e.g. ``position_ids`` in older files) when they equal the model's own.
    Floating-point tensors are cast to the model's dtype (half-precision files load as float32).

    Raises:
        DataError: for any refused difference.
    """
    expected = model.state_dict()
    buffers = dict(model.named_buffers())
    state = dict(state)
    for name, buffer in buffers.items():
        found = state.get(name)
        if name not in expected and found is not None and _same_values(found, buffer):
            del state[name]  # a buffer the model recomputes, stored by an older version
    unexpected = sorted(set(state) - set(expected))
    derived = {name for name in expected if name in buffers and not expected[name].is_floating_point()}
    missing = sorted(set(expected) - set(state) - derived)
    wrong = sorted(n for n in set(expected) & set(state) if tuple(expected[n].shape) != tuple(state[n].shape))
    if unexpected:
        raise DataError(
            f"{source} holds {_some(unexpected)}, which this model does not have: another architecture or size "
            "(check config.json)"
        )
    if missing:
        raise DataError(f"{source} lacks {_some(missing)}, which the model needs: an incomplete or other checkpoint")
    if wrong:
        name = wrong[0]
        raise DataError(
            f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, the model (from config.json) "
            f"needs {tuple(expected[name].shape)}"
        )
    broken = non_finite_tensor(state)
    if broken is not None:
        raise DataError(f"{source}: tensor {broken!r} holds NaN or infinite values")
    fitted = {}
    for name, reference in expected.items():
        tensor = state.get(name, reference)
        fitted[name] = tensor.to(reference.dtype) if tensor.is_floating_point() else tensor
    return fitted


def _same_values(found: torch.Tensor, own: torch.Tensor) -> bool:
    return tuple(found.shape) == tuple(own.shape) and torch.equal(found.to(own.dtype), own)


def _some(names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]!r}{more}"


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> str:
    """Load ``state`` into ``model`` (checked by ``fit_state``), freeze it, and return its fingerprint."""
    fitted = fit_state(model, state, source=source)
    model.load_state_dict(fitted, strict=True)
    model.requires_grad_(False)
    model.eval()
    return fingerprint_tensors(fitted)


def read_tokenizer(folder: Path, tokenizer_class: type, *, kind: str, vocab_size: int) -> Any:
    """The folder's tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``), without network."""
    if not (folder / "tokenizer.json").is_file() and not (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        raise DataError(
            f"{kind} checkpoint {folder} has no tokenizer (tokenizer.json, or vocab.json + merges.txt); "
            "copy them from the folder the weights came from"
        )
    try:
        tokenizer = tokenizer_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise DataError(f"{kind} tokenizer in {folder} does not load ({error})") from None
    if len(tokenizer) > vocab_size:
        raise DataError(
            f"{kind} tokenizer in {folder} has {len(tokenizer)} tokens but the text tower embeds {vocab_size}; "
            "the tokenizer files belong to another model"
        )
    return tokenizer


def _read_image_statistics(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean``/``image_std`` of ``preprocessor_config.json``, or CLIP's when the folder has none."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return CLIP_MEAN, CLIP_STD
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path} is not readable JSON ({error})") from None
    statistics = []
    for key, default in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD)):
        value = data.get(key, default) if isinstance(data, dict) else default
        if (
            not isinstance(value, list | tuple)
            or len(value) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise DataError(f"{path}: {key} must be three numbers, got {value!r}")
        statistics.append(tuple(float(v) for v in value))
    if min(statistics[1]) <= 0:
        raise DataError(f"{path}: image_std must be > 0, got {statistics[1]}")
    return statistics[0], statistics[1]


# --- the encoder -------------------------------------------------------------------------------


class CLIPEncoder(Encoder):
    """A frozen ``transformers.CLIPModel`` with its tokenizer; image and text. Build it with ``create_clip``.

    Args:
        model: the CLIP model (frozen and put in eval mode here).
        tokenizer: a transformers tokenizer for its text tower.
        mean, std: the image normalisation, applied inside (differentiable).
        fingerprint: hash of the loaded weights (None: hashed from the model's state on first use).
    """

    name = "clip"
    modalities = (Modality.IMAGE, Modality.TEXT)

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        mean: tuple[float, ...] = CLIP_MEAN,
        std: tuple[float, ...] = CLIP_STD,
        fingerprint: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        config = model.config
        self.embed_dim = int(config.projection_dim)
        self.max_text_length = int(config.text_config.max_position_embeddings)
        size = int(config.vision_config.image_size)
        self.spec = image_spec(size, size, mean=tuple(mean), std=tuple(std))
        if fingerprint is not None:
            self.__dict__["_fingerprint"] = fingerprint
        self.requires_grad_(False)
        self.eval()

    def logit_scale(self, modality: Modality | str) -> float:
        """exp of the checkpoint's learned temperature, clamped at 100 as CLIP training does."""
        self.check_modality(modality)
        return min(float(self.model.logit_scale.detach().exp()), DEFAULT_LOGIT_SCALE)

    def input_spec(self, modality: Modality) -> InputSpec:
        modality = self.check_modality(modality)
        if modality is Modality.TEXT:
            raise UnknownNameError("text is given as a list of strings; it has no tensor input spec")
        return self.spec

    def _embed(self, modality: Modality, x: torch.Tensor | Sequence[str]) -> torch.Tensor:
        if modality is Modality.TEXT:
            tokens = self.tokenizer(
                list(x), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
            )
            device = self.model.logit_scale.device
            pooled = self.model.text_model(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            ).pooler_output  # (B, width): the end-of-text token
            return self.model.text_projection(pooled)  # (B, D)
        pixels = self.spec.normalize(x)  # (B, 3, H, W), CLIP mean/std
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output  # (B, width): class token, post-norm
        return self.model.visual_projection(pooled)  # (B, D)


def create_clip(
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> CLIPEncoder:
    """CLIP from a Hugging Face folder (``config.json``, weights, tokenizer files), frozen, in eval mode.

    Args:
        checkpoint: the folder, e.g. a download of ``openai/clip-vit-base-patch32``; nothing is downloaded.
        weights: the same, under the name the CLI's ``--weights`` passes.
        device: where the model runs.

    Raises:
        DataError: no folder given, or a folder with a missing, corrupt or mismatched file.
        MissingDependencyError: transformers is not installed.
    """
    folder = checkpoint_folder(
        checkpoint, weights, kind="CLIP", published=CLIP_FOLDERS, option="checkpoint=DIR (CLI: --checkpoint DIR)"
    )
    transformers = require("transformers", extra=EXTRA)
    transformers.utils.logging.set_verbosity_error()
    config = transformers.CLIPConfig.from_dict(read_config_json(folder, model_type="clip", kind="CLIP"))
    state, source = read_state(folder, kind="CLIP")
    model = transformers.CLIPModel(config)
    fingerprint = load_strict(model, state, source=source)
    tokenizer = read_tokenizer(
        folder, transformers.CLIPTokenizer, kind="CLIP", vocab_size=int(config.text_config.vocab_size)
    )
    mean, std = _read_image_statistics(folder)
    return CLIPEncoder(model, tokenizer, mean=mean, std=std, fingerprint=fingerprint).to(device)
