"""Class centers with several descriptions per class (UniBind-style), stored as safetensors.

UniBind embeds K LLM-written descriptions of every class and predicts the class of the single
nearest of all K·C centers. Here those centers are a ``(C, K, D)`` tensor named ``centers`` in a
safetensors file whose metadata holds ``class_names`` (a JSON list, in class order). Today's
prompt-template centers are the special case K = 1: both scoring rules then give the same cosines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from bindguard._io import atomic_write_bytes
from bindguard._unpickle import load_tensor_pickle
from bindguard.errors import ConfigError, DataError, InvalidInputError

CenterRule = Literal["nearest", "mean"]
#: nearest: the best cosine over a class's K centers (UniBind's rule); mean: the cosine to their normalised mean.
CENTER_RULES: tuple[str, ...] = ("nearest", "mean")


@dataclass(frozen=True)
class ClassCenters:
    """K description embeddings for each of C classes, validated on construction.

    Attributes:
        centers: (C, K, D) floating-point, finite, no all-zero center; need not be unit norm.
        class_names: C distinct non-empty names, in the order of ``centers``.
    """

    centers: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        _check_centers(self.centers, self.class_names)

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0]

    @property
    def per_class(self) -> int:
        """K, the number of centers of every class."""
        return self.centers.shape[1]

    @property
    def dim(self) -> int:
        return self.centers.shape[2]

    def mean_centers(self) -> torch.Tensor:
        """(C, D) unit-norm single centers: where the "mean" rule scores, usable wherever (C, D) centers are."""
        return mean_centers(self.centers)

    def logits(self, embeddings: torch.Tensor, *, rule: CenterRule = "nearest", scale: float = 1.0) -> torch.Tensor:
        """``center_logits(embeddings, self.centers, ...)``: (B, C) class logits."""
        return center_logits(embeddings, self.centers, rule=rule, scale=scale)


def _check_centers(centers: object, class_names: Sequence[object]) -> None:
    if not isinstance(centers, torch.Tensor) or centers.ndim != 3 or not centers.is_floating_point():
        got = f"{tuple(centers.shape)} {centers.dtype}" if isinstance(centers, torch.Tensor) else type(centers).__name__
        raise InvalidInputError(f"class centers must be a floating-point (C, K, D) tensor, got {got}")
    if 0 in centers.shape:
        raise InvalidInputError(
            f"class centers need at least one class, center and dimension, got {tuple(centers.shape)}"
        )
    if not bool(torch.isfinite(centers).all()):
        raise InvalidInputError("class centers hold NaN or infinite values")
    zero = (centers.norm(dim=-1) == 0).nonzero()
    if len(zero):
        raise InvalidInputError(f"class center {tuple(zero[0].tolist())} (class, k) is all zeros: it has no direction")
    if len(class_names) != centers.shape[0]:
        raise InvalidInputError(f"{centers.shape[0]} classes of centers but {len(class_names)} class names")
    if not all(isinstance(name, str) and name for name in class_names):
        raise InvalidInputError("class names must be non-empty strings")
    if len(set(class_names)) != len(class_names):
        repeated = next(name for name in class_names if list(class_names).count(name) > 1)
        raise InvalidInputError(f"class name {repeated!r} appears more than once")


def mean_centers(centers: torch.Tensor) -> torch.Tensor:
    """(C, K, D) -> (C, D): each center normalised, the K averaged, the mean normalised (as prompt templates are)."""
    return F.normalize(F.normalize(centers, dim=-1).mean(1), dim=-1)


def center_logits(
    embeddings: torch.Tensor,
    centers: torch.Tensor,
    *,
    rule: CenterRule = "nearest",
    scale: float = 1.0,
    validate: bool = True,
) -> torch.Tensor:
    """Class logits from several centers per class; differentiable with respect to ``embeddings``.

    Args:
        embeddings: (B, D), any norm (they are normalised here).
        centers: (C, K, D), any norm.
        rule: ``"nearest"``: the best cosine over each class's K centers, so the argmax is the class of the
            top-1 center among all K·C (UniBind's prediction); ``"mean"``: the cosine to the normalised
            mean of the K (``mean_centers``).
        scale: multiplies the cosines; pass ``encoder.logit_scale(modality)`` for cross-entropy logits.
        validate: check shapes and finiteness; attack loops that checked once pass False.

    Returns:
        (B, C) logits, ``scale`` times a cosine in [-1, 1].

    Raises:
        ConfigError: an unknown rule.
        InvalidInputError: wrong ranks, mismatched dimensions, non-finite values.

    Shape:
        embeddings (B, D), centers (C, K, D) -> (B, C).
    """
    if rule not in CENTER_RULES:
        raise ConfigError(f"unknown center rule {rule!r}; allowed: {', '.join(CENTER_RULES)}")
    if validate:
        _check_logit_inputs(embeddings, centers)
    centers = centers.to(device=embeddings.device, dtype=embeddings.dtype)
    unit = F.normalize(embeddings, dim=-1)  # (B, D)
    if rule == "mean":
        return scale * (unit @ mean_centers(centers).T)  # (B, C)
    classes, per_class, dim = centers.shape
    cosines = unit @ F.normalize(centers, dim=-1).reshape(classes * per_class, dim).T  # (B, C*K)
    return scale * cosines.view(-1, classes, per_class).amax(-1)  # (B, C)


def _check_logit_inputs(embeddings: torch.Tensor, centers: torch.Tensor) -> None:
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        got = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise InvalidInputError(f"embeddings must be a floating-point (B, D) tensor, got {got}")
    if not isinstance(centers, torch.Tensor) or centers.ndim != 3:
        got = tuple(centers.shape) if isinstance(centers, torch.Tensor) else type(centers).__name__
        raise InvalidInputError(f"centers must be a (C, K, D) tensor, got {got}; use centers[:, None] for (C, D)")
    if embeddings.shape[1] != centers.shape[2]:
        raise InvalidInputError(
            f"embeddings have dimension {embeddings.shape[1]} but the centers {centers.shape[2]}; "
            "they must come from the same encoder"
        )
    if not bool(torch.isfinite(embeddings).all()) or not bool(torch.isfinite(centers).all()):
        raise InvalidInputError("embeddings or centers hold NaN or infinite values")


# ---------------------------------------------------------------- files


def save_class_centers(path: str | Path, centers: torch.Tensor, class_names: Sequence[str]) -> ClassCenters:
    """Write ``centers`` (C, K, D) and ``class_names`` as one safetensors file, atomically.

    Returns:
        The validated ``ClassCenters`` that was written (float32, on the CPU).

    Raises:
        InvalidInputError: centers or names that ``ClassCenters`` refuses.
    """
    result = ClassCenters(centers.detach().to("cpu", torch.float32).contiguous(), tuple(class_names))
    metadata = {"format": "bindguard-class-centers", "class_names": json.dumps(list(result.class_names))}
    atomic_write_bytes(Path(path), save({"centers": result.centers}, metadata=metadata))
    return result


def load_class_centers(path: str | Path) -> ClassCenters:
    """Read a file ``save_class_centers`` wrote.

    Raises:
        DataError: a missing or unreadable file, no ``centers`` tensor or ``class_names`` metadata, or
            contents ``ClassCenters`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such class-centers file: {path}")
    try:
        with safe_open(str(path), framework="pt") as stream:
            metadata = stream.metadata() or {}
            if "centers" not in stream.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                raise DataError(f"{path} holds no 'centers' tensor; is it a class-centers file?")
            centers = stream.get_tensor("centers")
    except SafetensorError as error:
        raise DataError(f"{path} is not a readable safetensors file ({error})") from None
    try:
        names = json.loads(metadata["class_names"])
    except (KeyError, json.JSONDecodeError):
        raise DataError(
            f"{path} has no class_names (a JSON list) in its metadata; write it with save_class_centers"
        ) from None
    if not isinstance(names, list):
        raise DataError(f"{path}: class_names must be a JSON list, got {type(names).__name__}")
    try:
        return ClassCenters(centers, tuple(names))
    except InvalidInputError as error:
        raise DataError(f"{path}: {error}") from None


def import_unibind_centers(pickle_path: str | Path, out_path: str | Path) -> ClassCenters:
    """Convert UniBind's pickled ``{label: tensor(K, D)}`` centres to a class-centers safetensors file.

    The pickle is read by bindguard's restricted unpickler (tensors only; nothing in it is run).
    Class order is the dict's order; integer labels become their decimal strings.

    Raises:
        DataError: a pickle that is not a non-empty ``{label: (K, D) tensor}`` with one K and D for all
            (or that asks for more than tensors), or ``out_path`` not ending in ``.safetensors``.
    """
    pickle_path, out_path = Path(pickle_path), Path(out_path)
    if out_path.suffix != ".safetensors":
        raise DataError(f"the class-centers file must end in .safetensors, got {out_path}")
    loaded = load_tensor_pickle(pickle_path)
    if not isinstance(loaded, Mapping) or not loaded:
        raise DataError(f"{pickle_path} holds a {type(loaded).__name__}, not a non-empty {{label: (K, D) tensor}} dict")
    names, stacked = [], []
    for label, value in loaded.items():
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(f"{pickle_path}: label {label!r} is a {type(label).__name__}; labels must be strings")
        if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or not value.is_floating_point():
            got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"{pickle_path}: class {label!r} holds {got}; expected a floating-point (K, D) tensor")
        value = value.detach().to(torch.float32).reshape(-1, value.shape[-1])  # (K, D); a (D,) is K = 1
        if stacked and value.shape != stacked[0].shape:
            raise DataError(
                f"{pickle_path}: class {label!r} has centers {tuple(value.shape)} but {names[0]!r} has "
                f"{tuple(stacked[0].shape)}; every class needs the same number K and dimension D"
            )
        names.append(str(label))
        stacked.append(value)
    try:
        return save_class_centers(out_path, torch.stack(stacked), names)
    except InvalidInputError as error:
        raise DataError(f"{pickle_path}: {error}") from None
