"""The OpenMP wait policy: the user's setting stands, spinning only on cores nobody else uses, chosen before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bindguard._openmp import VARIABLE, choose_wait_policy, other_runnable, runnable_processes


def counts(*values: int | None):
    """A reader of /proc/loadavg's runnable count that returns ``values`` in turn (the last one repeats)."""
    remaining = list(values)

    def read() -> int | None:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return read


def test_the_users_own_policy_stands_whatever_the_load() -> None:
    environ = {VARIABLE: "active"}
    reason = choose_wait_policy(environ, reader=counts(1))
    assert environ == {VARIABLE: "active"}
    assert reason == "active (set by the user)"


def test_an_idle_machine_gets_openmps_default_spinning() -> None:
    environ = {VARIABLE: ""}  # empty counts as unset, and is removed: OpenMP warns about an empty value
    reason = choose_wait_policy(environ, reader=counts(1))
    assert VARIABLE not in environ
    assert reason.startswith("OpenMP default")


def test_another_runnable_process_at_start_makes_threads_sleep() -> None:
    environ: dict[str, str] = {}
    reason = choose_wait_policy(environ, reader=counts(3))
    assert environ[VARIABLE] == "PASSIVE"
    assert "2.0 other runnable" in reason


def test_a_passing_blip_of_load_does_not_count_as_a_shared_machine() -> None:
    # one sample in five sees another task: a mean of 0.2, under the 0.5 at which cores count as shared
    assert other_runnable(counts(2, 1, 1, 1, 1)) == pytest.approx(0.2)
    environ: dict[str, str] = {}
    choose_wait_policy(environ, reader=counts(2, 1, 1, 1, 1))
    assert VARIABLE not in environ


def test_an_unreadable_load_falls_back_to_passive() -> None:
    environ: dict[str, str] = {}
    reason = choose_wait_policy(environ, reader=counts(None))
    assert environ[VARIABLE] == "PASSIVE"
    assert "could not read" in reason


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="Linux only: /proc/loadavg")
def test_runnable_processes_counts_at_least_the_reader_itself() -> None:
    count = runnable_processes()
    assert count is not None and count >= 1


def test_the_cli_module_loads_without_torch_so_the_policy_is_set_in_time() -> None:
    code = "import sys, bindguard.cli.main; print('torch' in sys.modules)"
    environment = {key: value for key, value in os.environ.items() if key != VARIABLE}
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    ).stdout.strip()
    assert loaded == "False"


def test_the_console_entry_point_keeps_the_users_setting() -> None:
    code = (
        "import os, sys; sys.argv = ['bindguard', '--help']\n"
        "from bindguard.cli import main\n"
        "main.app = lambda **kwargs: print(os.environ.get('OMP_WAIT_POLICY', 'default'))\n"
        "main.run()"
    )
    environment = {key: value for key, value in os.environ.items() if key != VARIABLE}
    for given, expected in (({VARIABLE: "PASSIVE"}, "PASSIVE"), ({VARIABLE: "active"}, "active")):
        shown = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment | given
        ).stdout.strip()
        assert shown == expected


def test_results_record_the_threads_and_policy_they_ran_under(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bindguard.pipeline.provenance import provenance

    class Model:
        identity = "model"

    monkeypatch.setenv(VARIABLE, "PASSIVE")
    block = provenance(model=Model(), data="builtin", fingerprints={}, seed=0)  # type: ignore[arg-type]
    assert block["threads"] == {"torch": torch.get_num_threads(), "omp_wait_policy": "PASSIVE"}
    monkeypatch.delenv(VARIABLE)
    assert provenance(model=Model(), data="builtin", fingerprints={}, seed=0)["threads"]["omp_wait_policy"] == "default"  # type: ignore[arg-type]
