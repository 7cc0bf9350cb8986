"""How OpenMP's idle threads wait, chosen before torch loads (the CLI and the benchmarks call this first).

PyTorch's CPU wheel uses GNU OpenMP, whose threads spin for a while at each barrier before they
sleep. On cores nobody else uses, spinning is the fast choice: with ``PASSIVE`` every parallel op
waits for sleeping threads to wake, and a TinyBind image forward+backward took 1.5x (batch 32) to
2.8x (batch 1) as long on an idle 2-core VM. On cores another busy process shares, spinning can
collapse: a thread spins while the peer it waits for is descheduled (batch 1 took 758 ms instead of
13 ms), and ``PASSIVE`` is the setting that never does. Figures: benchmarks/results/wait-policy.json,
made by ``python benchmarks/wait_policy.py --json``; benchmarks/README.md ("Threads") has the table.

So: the user's own ``OMP_WAIT_POLICY`` always stands; otherwise OpenMP's default when no other
process is runnable at start, ``PASSIVE`` when one is or when we cannot tell. A job that starts
later on the same cores is not seen; on a machine others share, export ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping

VARIABLE = "OMP_WAIT_POLICY"
SAMPLES = 5
INTERVAL = 0.02  # seconds between samples: 5 samples cost 0.1 s at start
BUSY = 0.5  # mean count of other runnable processes from which the cores count as shared


def runnable_processes() -> int | None:
    """How many tasks the kernel has runnable right now, this one included (Linux), else None."""
    try:
        with open("/proc/loadavg") as stream:
            return int(stream.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def other_runnable(reader: Callable[[], int | None] = runnable_processes, samples: int = SAMPLES) -> float | None:
    """Mean number of runnable tasks besides this process over ``samples`` readings, or None if unknown."""
    counts = []
    for index in range(samples):
        if index:
            time.sleep(INTERVAL)
        count = reader()
        if count is None:
            return None
        counts.append(max(count - 1, 0))  # the reading process is itself running
    return sum(counts) / len(counts)


def choose_wait_policy(
    environ: MutableMapping[str, str] | None = None, reader: Callable[[], int | None] = runnable_processes
) -> str:
    """Set ``OMP_WAIT_POLICY`` in ``environ`` (default ``os.environ``) as the module docstring says.

    Must run before torch is imported to take effect. Returns what holds and why, for the record.
    """
    environ = os.environ if environ is None else environ
    if environ.get(VARIABLE):
        return f"{environ[VARIABLE]} (set by the user)"
    others = other_runnable(reader)
    if others is None:
        environ[VARIABLE] = "PASSIVE"
        return "PASSIVE (could not read the machine's load)"
    if others >= BUSY:
        environ[VARIABLE] = "PASSIVE"
        return f"PASSIVE ({others:.1f} other runnable tasks at start)"
    environ.pop(VARIABLE, None)  # an empty value would make OpenMP warn
    return "OpenMP default (no other runnable task at start)"


def wait_policy() -> str:
    """The policy this process runs under, as OpenMP reads it."""
    return os.environ.get(VARIABLE) or "default"
