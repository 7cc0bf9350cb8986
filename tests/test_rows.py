"""Inputs as rows read on demand: FileRows reads exactly the rows asked for, and evaluation asks batch by batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import bindguard
from bindguard._types import Modality
from bindguard.data import Benchmark, ModalityData, load_dataset
from bindguard.data.rows import FileRows, Rows, all_rows, first_rows


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    values = torch.arange(10 * 2 * 3, dtype=torch.float64).view(10, 2, 3)
    path = tmp_path / "rows.safetensors"
    save_file({"image": values, "image.labels": torch.arange(10)}, str(path))
    return path, values


def test_file_rows_read_the_rows_asked_for_in_the_order_asked(stored) -> None:
    path, values = stored
    rows = FileRows(path, "image")
    assert len(rows) == 10 and rows.shape == (10, 2, 3) and isinstance(rows, Rows)
    assert torch.equal(rows[2:5], values[2:5].float())
    for index in ([7, 1, 2, 3, 9], [4, 4, 0], [], [9, 8, 7]):
        chosen = torch.tensor(index, dtype=torch.long)
        assert torch.equal(rows[chosen], values[chosen].float()), index
    head = first_rows(rows, 4)
    assert isinstance(head, FileRows) and len(head) == 4 and torch.equal(all_rows(head), values[:4].float())
    assert torch.equal(head[torch.tensor([3, 0])], values[[3, 0]].float())
    with pytest.raises(IndexError, match="out of range for 4 rows"):
        head[torch.tensor([4])]


def test_float64_rows_come_back_as_float32(stored) -> None:
    path, _ = stored
    assert FileRows(path, "image")[0:1].dtype == torch.float32


def test_user_file_is_evaluated_from_lazy_rows_with_the_same_numbers(tmp_path: Path) -> None:
    builtin = load_dataset("builtin", split="test", modalities=["image"], limit=12)
    images, labels = builtin.data[Modality.IMAGE].inputs, builtin.data[Modality.IMAGE].labels
    path = tmp_path / "mine.safetensors"
    metadata = {"class_names": json.dumps(list(builtin.class_names)), "templates": json.dumps({"image": list(builtin.templates[Modality.IMAGE])})}  # fmt: skip
    save_file({"image": images.double().contiguous(), "image.labels": labels}, str(path), metadata=metadata)
    loaded = load_dataset(str(path), modalities=[Modality.IMAGE])
    assert isinstance(loaded.data[Modality.IMAGE].inputs, FileRows)
    options = dict(attacks="apgd-ce", eps=["4/255"], n=12, steps=2, square_queries=0, checks=False, batch_size=5)
    from_file = bindguard.evaluate("tinybind", str(path), **options)
    from_memory = bindguard.evaluate("tinybind", builtin, **options)
    strip = lambda rows: [{k: v for k, v in row.to_dict().items()} for row in rows]  # noqa: E731
    assert strip(from_file.clean + from_file.robust) == strip(from_memory.clean + from_memory.robust)


class CountingRows:
    """Rows that record the largest batch asked for."""

    def __init__(self, values: torch.Tensor):
        self.values, self.largest = values, 0

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        batch = self.values[index]
        self.largest = max(self.largest, len(batch))
        return batch


def test_robust_evaluation_reads_one_batch_at_a_time(tinybind) -> None:
    builtin = load_dataset("builtin", split="test", modalities=["depth"], limit=20)
    item = builtin.data[Modality.DEPTH]
    rows = CountingRows(item.inputs)
    counted = Benchmark("counted", "test", builtin.class_names, builtin.templates,
                        {Modality.DEPTH: ModalityData(rows, item.labels, item.instance_ids, item.source)})  # fmt: skip
    results = bindguard.evaluate(
        tinybind, counted, attacks="apgd-ce", eps=["4/255"], steps=2, square_queries=3, checks=True,
        check_samples=4, batch_size=6,
    )  # fmt: skip
    assert len(results.robust) == 1 and results.robust[0].n == 20
    assert rows.largest <= 6, f"a batch of {rows.largest} rows was read at once (batch size 6)"
