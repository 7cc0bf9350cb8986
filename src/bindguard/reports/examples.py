"""Saved perturbations (``examples/adversarial-<modality>.safetensors``), read with numpy and checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from bindguard.errors import DataError

# Each modality's raw layout after the batch axis, as DESIGN.md states it; None: any size.
LAYOUTS: dict[str, tuple[int | None, ...]] = {
    "image": (3, None, None),
    "depth": (1, None, None),
    "thermal": (1, None, None),
    "video": (None, 3, None, None),
    "audio": (None,),
    "point": (None, 3),
    "event": (None, 2, None, None),
}
DEFAULT_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Example:
    """Clean and adversarial inputs of one modality, with what the model predicted for each.

    Shape:
        clean, adversarial: (B, ...) in the modality's raw layout; labels and predictions: (B,).
    """

    path: Path
    modality: str
    clean: np.ndarray
    adversarial: np.ndarray
    labels: np.ndarray | None = None
    clean_prediction: np.ndarray | None = None
    adversarial_prediction: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def difference(self) -> np.ndarray:
        return self.adversarial - self.clean

    @property
    def eps(self) -> float | None:
        return _number(self.metadata.get("eps"))

    @property
    def eps_abs(self) -> float | None:
        return _number(self.metadata.get("eps_abs"))

    @property
    def sample_rate(self) -> int:
        rate = _number(self.metadata.get("sample_rate"))
        return int(rate) if rate else DEFAULT_SAMPLE_RATE

    def class_name(self, index: int) -> str:
        """The class's name where the file lists them (metadata ``class_names``), else its index."""
        try:
            names = json.loads(self.metadata.get("class_names", "[]"))
            return str(names[index])
        except (ValueError, IndexError, TypeError):
            return str(index)


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def find_examples(directory: Path) -> list[Path]:
    return sorted((Path(directory) / "examples").glob("adversarial-*.safetensors"))


def load_example(path: Path) -> Example:
    """Read and check one example file.

    Raises:
        DataError: for a corrupt file, a missing tensor, an unknown modality or a layout that does not match it.
    """
    try:
        with safe_open(str(path), framework="np") as stream:
            metadata = dict(stream.metadata() or {})
            tensors = {name: stream.get_tensor(name) for name in stream.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError, ValueError, TypeError) as error:
        raise DataError(
            f"example file {path} is unreadable or corrupt ({error}); fix: delete it or attack again"
        ) from error
    modality = metadata.get("modality") or path.stem.removeprefix("adversarial-")
    if modality not in LAYOUTS:
        raise DataError(f"example file {path}: unknown modality {modality!r}; allowed: {', '.join(LAYOUTS)}")
    missing = [name for name in ("clean", "adversarial") if name not in tensors]
    if missing:
        raise DataError(f"example file {path} lacks the tensor(s) {', '.join(missing)}; fix: attack again")
    clean, adversarial = (tensors[name].astype(np.float32) for name in ("clean", "adversarial"))
    layout = LAYOUTS[modality]
    fits = clean.ndim == len(layout) + 1 and all(
        want is None or want == got for want, got in zip(layout, clean.shape[1:], strict=True)
    )
    if not fits or clean.shape != adversarial.shape or len(clean) == 0:
        expected = "(B, " + ", ".join("·" if size is None else str(size) for size in layout) + ")"
        raise DataError(
            f"example file {path}: {modality} tensors must both have layout {expected}, "
            f"got clean {clean.shape} and adversarial {adversarial.shape}"
        )
    return Example(
        path=path,
        modality=modality,
        clean=clean,
        adversarial=adversarial,
        labels=tensors.get("labels"),
        clean_prediction=tensors.get("clean_prediction"),
        adversarial_prediction=tensors.get("adversarial_prediction"),
        metadata=metadata,
    )
