"""Inputs held as indexable rows, read on demand, so a data set need not sit in memory as one tensor.

Evaluation, attacks and calibration only ever ask a modality's inputs for their length and for a
batch of rows (``inputs[index]`` with a slice or a 1-D index tensor), then move that batch to the
encoder's device. A ``torch.Tensor`` answers both; so does ``FileRows``, which reads the rows of
one tensor of a safetensors file when they are asked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors import safe_open

from bindguard.errors import DataError

DOMAIN_TOLERANCE = 1e-5  # as the encoders' input specs allow: float rounding of a projection


@runtime_checkable
class Rows(Protocol):
    """What generic code needs of a modality's inputs: a length, a per-sample shape and batches of rows."""

    @property
    def shape(self) -> torch.Size: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


class FileRows:
    """Rows ``[start, stop)`` of tensor ``key`` in a safetensors file, read lazily (memory-mapped slices).

    Floating-point rows of any precision are returned as float32, the precision encoders run in
    (numpy's default float64 included, as users expect). Rows holding NaN or Inf, or values
    outside ``domain`` when one is given, are refused when they are read, naming the file and row.

    Args:
        path: the safetensors file.
        key: the tensor's name; its first axis indexes samples.
        start, stop: the rows this view covers (default: all).
        domain: the valid (low, high) range of the values, if known.
    """

    def __init__(
        self,
        path: str | Path,
        key: str,
        start: int = 0,
        stop: int | None = None,
        *,
        domain: tuple[float, float] | None = None,
    ):
        self.path, self.key, self.domain = Path(path), key, domain
        with safe_open(str(self.path), framework="pt") as handle:
            view = handle.get_slice(key)
            total, self._sample_shape = view.get_shape()[0], tuple(view.get_shape()[1:])
            if view.get_dtype() not in _DTYPES:
                raise DataError(
                    f"{self.path}: {key!r} has dtype {view.get_dtype()}; store float32 (or any float) inputs"
                )
            stored = _DTYPES[view.get_dtype()]
        self.dtype = torch.float32 if stored.is_floating_point else stored
        self.start = max(0, min(start, total))
        self.stop = total if stop is None else max(self.start, min(stop, total))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._sample_shape))

    def __len__(self) -> int:
        return self.stop - self.start

    def head(self, count: int) -> FileRows:
        """The first ``count`` rows, still lazy."""
        return FileRows(self.path, self.key, self.start, self.start + count, domain=self.domain)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, slice):
            first, last, step = index.indices(len(self))
            return self._read(torch.arange(first, last, step))
        return self._read(torch.as_tensor(index, dtype=torch.long).flatten())

    def _read(self, index: torch.Tensor) -> torch.Tensor:
        """The rows at ``index`` (relative to this view), read in runs of consecutive rows."""
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows of {self.key!r} in {self.path}")
        pieces = []
        with safe_open(str(self.path), framework="pt") as handle:
            view = handle.get_slice(self.key)
            for first, last in _runs(index.tolist()):
                pieces.append(view[self.start + first : self.start + last + 1])
        if not pieces:
            return torch.empty((0, *self._sample_shape), dtype=self.dtype)
        rows = torch.cat(pieces).to(self.dtype)
        if rows.is_floating_point():
            self._check_values(rows, sorted(index.tolist()))
        if bool((index[1:] > index[:-1]).all()):
            return rows
        return rows[torch.argsort(torch.argsort(index, stable=True), stable=True)]  # runs were read in sorted order

    def _check_values(self, rows: torch.Tensor, numbers: list[int]) -> None:
        """Refuse non-finite or out-of-domain values; ``numbers`` are the rows' indices in this view, in order."""
        flat = rows.reshape(rows.shape[0], -1)  # (B, everything else)
        finite = torch.isfinite(flat).all(1)
        if not bool(finite.all()):
            row = self.start + numbers[int((~finite).nonzero()[0])]
            raise DataError(
                f"{self.path}: {self.key!r} row {row} holds NaN or Inf; fix: replace or drop such samples "
                "(e.g. torch.nan_to_num) and save the file again"
            )
        if self.domain is None:
            return
        low, high = self.domain
        excess = torch.maximum(low - flat, flat - high).amax(1)  # (B,) distance outside the domain
        outside = excess > DOMAIN_TOLERANCE
        if bool(outside.any()):
            first = int(outside.nonzero()[0])
            raise DataError(
                f"{self.path}: {self.key!r} row {self.start + numbers[first]} has values outside the domain "
                f"[{low}, {high}] by up to {float(excess[first]):.4g}; fix: scale the inputs into it"
            )


def _runs(index: list[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive row numbers, e.g. [5, 1, 2, 3] -> [(1, 3), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for row in sorted(index):
        if runs and row == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    return runs


def first_rows(rows: Rows, count: int) -> Rows:
    """The first ``count`` rows, without reading them when the rows are lazy."""
    return rows.head(count) if hasattr(rows, "head") else rows[:count]


def fingerprint_rows(rows: Rows, labels: torch.Tensor, *, batch_size: int = 256) -> str:
    """A short SHA-256 of the samples and labels themselves, read batch by batch (what the data is, not where)."""
    digest = hashlib.sha256(f"{tuple(rows.shape)};".encode())
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size].detach().cpu().float().contiguous()
        digest.update(batch.numpy().tobytes())
    digest.update(labels.detach().cpu().long().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def all_rows(rows: Rows) -> torch.Tensor:
    """Every row as one tensor (for the few places that need them together, e.g. example files)."""
    return rows if isinstance(rows, torch.Tensor) else rows[0 : len(rows)]


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
