"""A prepared cache: a data set decoded once into safetensors shards, streamed batch by batch afterwards.

``bindguard data prepare NAME --data-root PATH --out CACHE`` decodes the files one at a time (in
the order a limited run takes them) into ``CACHE/shard-NNNNN.safetensors`` (tensors ``inputs``
and ``labels``, ``--shard-size`` samples each), then writes ``CACHE/manifest.json`` last: the data
set, split, modality, decode settings, class names, templates, counts, shards, and the SHA-256
of every source file. A folder without a manifest is an unfinished preparation and is redone.

Preparing again with the same settings checks the source files against the manifest: when
nothing changed it is a no-op; a changed or missing file is named, and ``rebuild`` prepares
anew. ``--data CACHE`` then evaluates from the shards, reading only the rows a batch needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save

from bindguard._io import atomic_write_bytes, atomic_write_json
from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.data.files import Source, decoded
from bindguard.data.rows import FileRows
from bindguard.errors import ConfigError, DataError

FORMAT = "bindguard-prepared/1"
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(source: Source, limit: int | None, skip_bad_files: bool) -> dict:
    """What decides the cache's contents besides the files' bytes."""
    return {
        "format": FORMAT,
        "data": source.name,
        "split": source.split,
        "modality": source.modality.value,
        "settings": source.settings,
        "limit": limit,
        "skip_bad_files": skip_bad_files,
        "class_names": list(source.listed.class_names),
        "templates": list(source.templates),
    }


def prepare(
    source: Source,
    out: Path,
    *,
    root: Path,
    limit: int | None = None,
    skip_bad_files: bool = False,
    shard_size: int = 1024,
    rebuild: bool = False,
) -> tuple[dict, bool]:
    """Decode ``source`` into shards under ``out``; returns (the manifest, whether anything was written).

    Raises:
        DataError: a source file changed or went missing since ``out`` was prepared (without
            ``rebuild``), or ``out`` holds a cache of other settings.
    """
    if shard_size < 1:
        raise ConfigError(f"shard size must be at least 1, got {shard_size}")
    identity = _identity(source, limit, skip_bad_files)
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and not rebuild:
        manifest = read_manifest(out)
        saved = {k: manifest.get(k) for k in identity}
        if saved != json.loads(json.dumps(identity)):
            changed = sorted(k for k in identity if saved.get(k) != json.loads(json.dumps(identity[k])))
            raise DataError(
                f"{out} holds a cache prepared with other settings (changed: {', '.join(changed)}); "
                "fix: --rebuild to prepare it anew, or another --out"
            )
        for relative, digest in manifest["files"].items():
            path = root / relative
            if not path.is_file():
                raise DataError(f"{path} is missing since {out} was prepared; fix: restore it, or --rebuild")
            if file_sha256(path) != digest:
                raise DataError(f"{path} changed since {out} was prepared; fix: --rebuild to prepare it again")
        return manifest, False
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here until the new manifest, the folder is unfinished
    for stale in out.glob("shard-*.safetensors"):
        stale.unlink()
    files, shards, buffer, labels = {}, [], [], []

    def flush() -> None:
        name = f"shard-{len(shards):05d}.safetensors"
        tensors = {"inputs": torch.stack(buffer).contiguous(), "labels": torch.tensor(labels, dtype=torch.long)}
        atomic_write_bytes(out / name, save(tensors))
        shards.append({"file": name, "count": len(buffer)})
        buffer.clear()
        labels.clear()

    captions = []
    for path, position, value in decoded(source, limit=limit, skip_bad_files=skip_bad_files):
        files[str(path.relative_to(root))] = file_sha256(path)
        buffer.append(value)
        labels.append(source.listed.labels[position])
        if source.listed.captions is not None:
            captions.append(list(source.listed.captions[position]))
        if len(buffer) == shard_size:
            flush()
    if buffer:
        flush()
    manifest = identity | {
        "count": sum(shard["count"] for shard in shards),
        "shape": list(value.shape),
        "shards": shards,
        "files": files,
        "captions": captions if source.listed.captions is not None else None,
    }
    atomic_write_json(manifest_path, manifest)
    return manifest, True


def is_prepared(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{folder / MANIFEST} cannot be read ({error}); fix: prepare the cache again") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{folder / MANIFEST} is not a bindguard cache manifest; fix: prepare the cache again")
    return manifest


class ShardedRows:
    """The rows of several shard files as one sequence, read on demand (``data.rows.Rows``)."""

    def __init__(self, parts: list[FileRows]):
        self.parts = parts
        self.starts = torch.tensor([0] + [len(p) for p in parts]).cumsum(0)
        self.dtype = parts[0].dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.parts[0].shape[1:]))

    def __len__(self) -> int:
        return int(self.starts[-1])

    def head(self, count: int) -> ShardedRows:
        kept, left = [], count
        for part in self.parts:
            if left <= 0:
                break
            kept.append(part.head(min(left, len(part))))
            left -= len(kept[-1])
        return ShardedRows(kept)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(*index.indices(len(self)))
        index = torch.as_tensor(index, dtype=torch.long).flatten()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        shard = torch.searchsorted(self.starts, index, right=True) - 1
        out = torch.empty((index.numel(), *self.shape[1:]), dtype=self.dtype)
        for number in shard.unique().tolist():
            chosen = torch.nonzero(shard == number).flatten()
            out[chosen] = self.parts[number][index[chosen] - self.starts[number]]
        return out


def load_prepared(
    folder: Path,
    *,
    modalities: list | tuple | None = None,
    limit: int | None = None,
    domains: dict | None = None,
    input_shapes: dict | None = None,
    **_: object,
) -> Benchmark:
    """A prepared cache as a ``Benchmark`` whose inputs stream from its shards."""
    from bindguard._types import Modality

    manifest = read_manifest(folder)
    modality = Modality.parse(manifest["modality"])
    if modalities is not None and modality not in [Modality.parse(m) for m in modalities]:
        raise DataError(f"{folder} holds {modality.value} only; fix: --modalities {modality.value}")
    wanted = (input_shapes or {}).get(modality)
    if wanted is not None and tuple(wanted) != tuple(manifest["shape"]):
        raise DataError(
            f"{folder} was prepared at {tuple(manifest['shape'])} per sample, the encoder takes {tuple(wanted)}; "
            "fix: prepare it for this model (bindguard data prepare ... --model NAME)"
        )
    domain = (domains or {}).get(modality)
    parts = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            raise DataError(f"{path} is missing from the prepared cache; fix: prepare it again (--rebuild)")
        parts.append(FileRows(path, "inputs", domain=domain))
    inputs = ShardedRows(parts)
    labels = torch.cat([FileRows(folder / s["file"], "labels")[0 : s["count"]] for s in manifest["shards"]])
    if limit is not None:
        inputs, labels = inputs.head(limit), labels[:limit]
    captions = manifest.get("captions")
    captions = None if captions is None else tuple(tuple(c) for c in captions[: len(labels)])
    data = ModalityData(
        inputs, labels.long(), torch.arange(len(labels)), f"{manifest['data']}:{modality.value}", captions
    )
    return Benchmark(
        name=manifest["data"],
        split=manifest["split"],
        class_names=tuple(manifest["class_names"]),
        templates={modality: tuple(manifest["templates"])},
        data={modality: data},
    )
