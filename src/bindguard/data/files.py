"""Labelled media files turned into a ``Benchmark``: class order, limits, templates and unreadable files.

A loader lists its files with their classes (``LabelledFiles``); ``decode_benchmark`` decodes each
into the encoder's raw domain (``data.media``). With ``limit``, samples are taken round-robin over
the classes (each class's files in name order), so the first n cover every class. An unreadable
file stops the load with one line naming it, or, with ``skip_bad_files``, is left out and counted
in a warning that names the first few.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from bindguard._types import Modality
from bindguard.data.builtin.benchmark import Benchmark, ModalityData
from bindguard.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class LabelledFiles:
    """Files of one modality and split with their class indices into ``class_names`` (and, for
    caption retrieval, each file's captions)."""

    files: list[Path]
    labels: list[int]
    class_names: tuple[str, ...]
    captions: list[tuple[str, ...]] | None = None


def class_name(folder: str) -> str:
    """A folder or category name as prompt text: ``crackling_fire`` -> ``crackling fire``."""
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


def templates_for(modality: Modality, path: Path | None = None) -> tuple[str, ...]:
    """The prompt templates of a modality: from ``path`` (JSON ``{modality: [...]}``) or the shipped file."""
    if path is None:
        text = resources.files("bindguard.data").joinpath("sets/templates.json").read_text()
    else:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise DataError(f"templates file {path} cannot be read ({error}); give a JSON file") from error
    try:
        chosen = json.loads(text)[modality.value]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"templates file {path}: no list of templates for {modality.value!r} ({error}); "
            'fix: a JSON object like {"image": ["a photo of a {}."]}'
        ) from error
    if not chosen or not all(isinstance(t, str) and "{}" in t for t in chosen):
        raise DataError(f"templates file {path}: every {modality.value} template must be text with one {{}}")
    return tuple(chosen)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def check_root(data_root: str | Path | None, name: str) -> Path:
    """The ``--data-root`` folder, which must exist."""
    if data_root is None:
        raise ConfigError(f"data set {name!r} is read from files; give their folder with --data-root PATH")
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a folder; give the folder that holds the {name} files")
    return root


def round_robin(listed: LabelledFiles) -> list[int]:
    """Positions ordered class by class in turns: class 0's first file, class 1's first, ..., then seconds."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(listed.labels):
        by_class.setdefault(label, []).append(position)
    queues = [by_class[label] for label in sorted(by_class)]
    order = []
    for turn in range(max((len(q) for q in queues), default=0)):
        order += [queue[turn] for queue in queues if turn < len(queue)]
    return order


@dataclass(frozen=True)
class Source:
    """A data set's files for one split and modality, and how each becomes a raw input.

    Attributes:
        settings: what decides the decoded values besides the files (shape, sample rate...), as
            recorded in a prepared cache's manifest.
    """

    name: str
    split: str
    modality: Modality
    listed: LabelledFiles
    decode: Callable[[Path], torch.Tensor]
    settings: dict
    templates: tuple[str, ...]


def decoded(source: Source, *, limit: int | None, skip_bad_files: bool) -> Iterator[tuple[Path, int, torch.Tensor]]:
    """(file, its position in the listing, raw input) of at most ``limit`` files, round-robin over classes.

    Unreadable files stop the iteration with their error, or with ``skip_bad_files`` are left
    out and counted in one warning at the end.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if not source.listed.files:
        raise DataError(f"data set {source.name!r} ({source.split}) lists no {source.modality.value} files")
    bad, count = [], 0
    for position in round_robin(source.listed):
        if limit is not None and count == limit:
            break
        path = source.listed.files[position]
        try:
            value = source.decode(path)
        except DataError as error:
            if not skip_bad_files:
                raise
            bad.append(str(error).split(";")[0])
            continue
        count += 1
        yield path, position, value
    if bad:
        logger.warning(
            "left out %d unreadable file(s) of %s (--skip-bad-files): %s%s",
            len(bad), source.name, "; ".join(bad[:3]), " ..." if len(bad) > 3 else "",
        )  # fmt: skip
    if not count:
        raise DataError(
            f"data set {source.name!r} ({source.split}): none of its {source.modality.value} files could be read"
        )


def decode_benchmark(source: Source, *, limit: int | None, skip_bad_files: bool) -> Benchmark:
    """Decode the source's files (at most ``limit``, round-robin over classes) into a one-modality ``Benchmark``."""
    items = list(decoded(source, limit=limit, skip_bad_files=skip_bad_files))
    listed = source.listed
    data = ModalityData(
        inputs=torch.stack([value for _, _, value in items]),
        labels=torch.tensor([listed.labels[position] for _, position, _ in items], dtype=torch.long),
        instance_ids=torch.arange(len(items)),
        source=f"{source.name}:{source.modality.value}",  # no instance is shared with another modality
        captions=None if listed.captions is None else tuple(listed.captions[p] for _, p, _ in items),
    )
    return Benchmark(
        name=source.name,
        split=source.split,
        class_names=source.listed.class_names,
        templates={source.modality: source.templates},
        data={source.modality: data},
    )


def shape_of(shapes: dict | None, modality: Modality, default: Sequence[int]) -> tuple[int, ...]:
    """The per-sample shape the encoder asked for (``shapes`` keyed by modality or its name), else ``default``."""
    for key, value in (shapes or {}).items():
        if Modality.parse(key) is modality:
            return tuple(int(v) for v in value)
    return tuple(default)


def loader(source: Callable[..., Source]) -> Callable[..., Benchmark]:
    """The registered loader of a data set read from files: its ``source`` listing, decoded in full.

    Options of the source's own (event folders' ``sensor_size``) pass through. The loader's
    signature names them, so the registry refuses any other option by name, and so does a call.
    """

    def load(
        *,
        data_root: str | Path | None = None,
        split: str = "test",
        modalities: Sequence[Modality] | None = None,
        limit: int | None = None,
        shapes: dict | None = None,
        sample_rate: int | None = None,
        skip_bad_files: bool = False,
        templates: Path | None = None,
        **options: Any,
    ) -> Benchmark:
        inspect.signature(load).bind(**options)  # TypeError naming an option the source does not take
        listed = source(
            data_root=data_root, split=split, modalities=modalities, shapes=shapes, sample_rate=sample_rate,
            templates=templates, **options,
        )  # fmt: skip
        return decode_benchmark(listed, limit=limit, skip_bad_files=skip_bad_files)

    load.__doc__ = source.__doc__
    load.__signature__ = _loader_signature(load, source)  # type: ignore[attr-defined]
    return load


def _loader_signature(load: Callable[..., Benchmark], source: Callable[..., Source]) -> inspect.Signature:
    """``load``'s own parameters, then in place of ``**options`` those only ``source`` takes.

    What a ``functools.partial`` source has fixed (the folder loaders' data set name) is no option.
    """
    common = inspect.signature(load)
    fixed = set(common.parameters) | set(getattr(source, "keywords", {}))
    shared = [parameter for parameter in common.parameters.values() if parameter.kind is not parameter.VAR_KEYWORD]
    own = [parameter for name, parameter in inspect.signature(source).parameters.items() if name not in fixed]
    return common.replace(parameters=shared + own)
