"""`import bindguard` stays light, and the layers only import downwards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "transformers",
    "open_clip",
    "torchaudio",
    "imagebind",
    "sentence_transformers",
    "matplotlib",
    "typer",
    "rich",
    "sklearn",
)


@pytest.mark.parametrize("module", ["bindguard", "bindguard.encoders", "bindguard.data", "bindguard.evaluation.clean"])
def test_import_does_not_pull_heavy_backends(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing {module} loaded {loaded}"


def test_layers_contract_holds() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:  # part of the dev extra the test command installs: missing means the check never ran
        pytest.fail("import-linter is not installed beside this Python; fix: pip install -e '.[dev]'")
    result = subprocess.run([lint], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
