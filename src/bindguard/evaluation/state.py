"""Resumable evaluation state: per-sample results after each attack, saved atomically as JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bindguard._io import atomic_write_json


def config_key(config: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a result."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunState:
    """The state of one (modality, threat) evaluation: which attacks are done and what they left robust.

    A run interrupted at any point resumes from the last finished attack; a state written for a
    different configuration is ignored, never mixed in.
    """

    def __init__(self, path: Path | None, config: dict[str, Any]):
        self.path = path
        self.key = config_key(config)
        self.entries: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = {}
            if isinstance(saved, dict) and saved.get("key") == self.key:
                self.entries = saved.get("entries", {})

    def get(self, name: str) -> Any | None:
        return self.entries.get(name)

    def put(self, name: str, value: Any) -> None:
        self.entries[name] = value
        if self.path is not None:
            atomic_write_json(self.path, {"key": self.key, "entries": self.entries})
