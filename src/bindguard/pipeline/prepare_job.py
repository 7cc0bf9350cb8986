"""``bindguard.prepare_data``: decode a data set read from files once, into a cache evaluation streams from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bindguard.data import data_source
from bindguard.data.files import check_root
from bindguard.data.prepared import prepare
from bindguard.encoders import Encoder
from bindguard.errors import ConfigError
from bindguard.pipeline.setup import check_out, load_encoder


@dataclass(frozen=True)
class PreparedData:
    """Where the cache is, its manifest, and whether this call wrote it (False: it was up to date)."""

    out: Path
    manifest: dict
    written: bool


def prepare_data(
    name: str,
    *,
    data_root: str | Path,
    out: str | Path,
    model: Encoder | str = "tinybind",
    weights: str | Path | None = None,
    split: str = "test",
    n: int | None = None,
    skip_bad_files: bool = False,
    templates: str | Path | None = None,
    shard_size: int = 1024,
    rebuild: bool = False,
) -> PreparedData:
    """Decode ``name``'s files under ``data_root`` at ``model``'s input sizes into shards under ``out``.

    Preparing again is a no-op when the settings and every source file are unchanged; a changed
    or missing file is named (``rebuild=True`` prepares anew). Evaluate with ``data=out``.

    Example::

        bindguard.prepare_data("esc50", data_root="~/data/ESC-50", out="cache/esc50")
        results = bindguard.evaluate("tinybind", "cache/esc50", modalities="audio")
    """
    target = check_out(out)
    if target is None:
        raise ConfigError("prepare_data needs out=, the folder of the cache")
    root = check_root(Path(data_root).expanduser(), name)
    encoder = load_encoder(model, weights=weights, device="cpu")  # only its input sizes are needed
    specs = {m: encoder.input_spec(m) for m in encoder.modalities if m.value != "text"}
    rates = {spec.sample_rate for spec in specs.values() if spec.sample_rate}
    source = data_source(
        name,
        data_root=root,
        split=split,
        shapes={m: spec.shape for m, spec in specs.items()},
        sample_rate=rates.pop() if rates else None,
        templates=None if templates is None else Path(templates),
    )
    manifest, written = prepare(
        source, target, root=root, limit=n, skip_bad_files=skip_bad_files, shard_size=shard_size, rebuild=rebuild
    )
    return PreparedData(target, manifest, written)
