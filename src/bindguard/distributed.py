"""Many processes, one run: the launcher's world (torchrun), batches shared out by rank, results gathered.

``torchrun --nproc-per-node N -m bindguard eval ...`` starts N copies of the same command. Each
copy calls ``setup()`` (the CLI does it when it sees the launcher's environment), takes every
N-th batch of whatever is attacked or embedded, and the batches' outcomes are all-gathered so
every rank holds the same per-sample results. A batch is the same samples in the same order on
any number of ranks, and attacks seed each batch alike, so N ranks give exactly the numbers of
one process. Without a launcher the world is one process and nothing here communicates.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bindguard.errors import ConfigError

# torch is imported inside the functions: the CLI reads the launcher's variables before torch loads.

#: How long a rank waits for the others at a gather: ranks wait for the slowest one's batches.
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the launcher's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes results and prints (rank 0)."""
        return self.rank == 0

    def owns(self, batch_number: int) -> bool:
        """Batches are dealt round-robin, so every rank gets a share of each stage's work."""
        return batch_number % self.size == self.rank


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment() -> World:
    """The world the launcher's variables describe, before or without joining it (e.g. to keep other ranks quiet)."""
    return World(
        int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    )


def current() -> World:
    """The world this process is in: the initialised process group, else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def setup(device: str | None = None) -> World:
    """Join the launcher's process group (gloo on the CPU, NCCL on CUDA) from its environment variables.

    Called once per process; a no-op without a launcher or when the group already exists.

    Args:
        device: the device the run asked for; CUDA ranks each take the GPU of their local rank.

    Raises:
        ConfigError: the launcher's variables are incomplete, or CUDA ranks outnumber the GPUs.
    """
    import torch
    import torch.distributed as dist

    if not launched() or (dist.is_available() and dist.is_initialized()):
        return current()
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; "
            "start several processes with torchrun (torchrun --nproc-per-node N -m bindguard ...)"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU (torch sees {torch.cuda.device_count()}); "
                "fix: --nproc-per-node at most the GPU count, or --device cpu"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=TIMEOUT)
    return current()


def my_batches(count: int, batch_size: int, world: World | None = None) -> Iterator[tuple[int, slice]]:
    """(batch number, positions) of this rank's batches among ``count`` items cut into ``batch_size``."""
    world = world or current()
    for number, start in enumerate(range(0, count, batch_size)):
        if world.owns(number):
            yield number, slice(start, min(start + batch_size, count))


def share(count: int, world: World | None = None) -> slice:
    """This rank's contiguous part of a batch of ``count`` items split as evenly as possible (first ranks larger)."""
    world = world or current()
    size, extra = divmod(count, world.size)
    start = world.rank * size + min(world.rank, extra)
    return slice(start, start + size + (world.rank < extra))


def total(value: float, world: World | None = None) -> float:
    """The sum of ``value`` over all ranks, on every rank (e.g. a loss summed over a batch's shares)."""
    world = world or current()
    if world.size == 1:
        return value
    import torch
    import torch.distributed as dist

    summed = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        summed = summed.cuda()
    dist.all_reduce(summed)
    return float(summed.item())


def gather(value: Any, world: World | None = None) -> list[Any]:
    """Every rank's ``value`` (picklable; tensors on the CPU), in rank order, on every rank."""
    world = world or current()
    if world.size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def gather_batches(mine: dict[int, Any], world: World | None = None) -> list[Any]:
    """Per-batch outcomes of all ranks, in batch order, from each rank's ``{batch number: outcome}``."""
    merged: dict[int, Any] = {}
    for part in gather(mine, world):
        merged.update(part)
    return [merged[number] for number in sorted(merged)]


def barrier(world: World | None = None) -> None:
    """Wait for every rank (e.g. before rank 0 reads what the others wrote)."""
    if (world or current()).size > 1:
        import torch.distributed as dist

        dist.barrier()
