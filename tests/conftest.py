"""Shared fixtures: one TinyBind per session, a private cache folder, seeded torch."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads stall on shared cores

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["BINDGUARD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tinybind():
    from bindguard.encoders import create_encoder

    return create_encoder("tinybind")


@pytest.fixture(scope="session")
def test_benchmark():
    from bindguard.data import load_dataset

    return load_dataset("builtin", split="test")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many cases of the bad-input corpus ran (tests/test_bad_inputs.py), so CI logs show its size."""
    cases = {
        report.nodeid
        for category, reports in terminalreporter.stats.items()
        if category != "deselected"
        for report in reports
        if "test_bad_inputs.py::test_bad_" in getattr(report, "nodeid", "")
    }
    if cases:
        terminalreporter.write_line(f"bad-input corpus: {len(cases)} cases")
