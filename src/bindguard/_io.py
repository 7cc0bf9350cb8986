"""Atomic file writes: a temp file in the same folder, then a rename, so readers never see half a file.

A temp file is named ``.<target>.<pid>-<random>.partial`` after its target and the process writing
it. A writer killed before its rename (SIGKILL, power loss) leaves that file behind; the next write
to the same target removes it once its process is gone, never the file of a writer still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# a temp file of a write to <target>: tagged with the writer's pid, or untagged (older bindguard)
_PARTIAL = re.compile(r"\.(?P<target>.+)\.(?:(?P<pid>\d+)-)?[a-z0-9_]+\.partial")


def _writer_gone(pid: int | None) -> bool:
    """Whether the process that made a temp file has exited (an untagged file is from an older bindguard)."""
    if pid is None:
        return True
    if pid == os.getpid():
        return False  # another thread of this process may be writing the same target
    if os.name == "nt":
        return True  # there a live writer's open file cannot be deleted, so the unlink fails harmlessly
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to another user
        return False
    return False


def stale_partials(directory: Path, target: str | re.Pattern[str]) -> list[Path]:
    """Temp files in ``directory`` left by interrupted writes whose writer has exited.

    Args:
        directory: the folder of the targets.
        target: a target's file name, or a pattern its whole name matches (e.g. staged files).

    Returns:
        The stale temp files, safe to delete.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = []
    for candidate in directory.iterdir():
        match = _PARTIAL.fullmatch(candidate.name)
        if match is None:
            continue
        named = match["target"] == target if isinstance(target, str) else target.fullmatch(match["target"])
        if named and _writer_gone(int(match["pid"]) if match["pid"] else None):
            stale.append(candidate)
    return stale


def remove_stale_partials(directory: Path, target: str | re.Pattern[str]) -> None:
    """Delete the temp files ``stale_partials(directory, target)`` finds; one that cannot be deleted stays."""
    for path in stale_partials(directory, target):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, path.name)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
