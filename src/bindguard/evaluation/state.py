"""Resumable evaluation state: per-sample results after each attack, saved atomically as JSON."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from bindguard._io import atomic_write_json

logger = logging.getLogger(__name__)


def config_key(config: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a result."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunState:
    """The state of one (modality, threat) evaluation: which attacks are done and what they left robust.

    A run interrupted at any point resumes from the last finished attack. The state is keyed by
    everything that determines its numbers (the model's and the data's content fingerprints, the
    settings, the versions); a state written for anything else is never mixed in: the run starts
    over and says which inputs changed (``restarted``).
    """

    def __init__(self, path: Path | None, config: dict[str, Any]):
        self.path = path
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.key = config_key(config)
        self.entries: dict[str, Any] = {}
        self.restarted: str | None = None
        if path is None or not path.exists():
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict) or not isinstance(saved.get("entries"), dict):
            self.restarted = "it is unreadable"
        elif saved.get("key") != self.key:
            before = saved.get("config") if isinstance(saved.get("config"), dict) else {}
            changed = sorted(k for k in set(before) | set(self.config) if before.get(k) != self.config.get(k))
            self.restarted = f"it was made for other inputs (changed: {', '.join(changed) or 'unknown'})"
        else:
            self.entries = saved["entries"]
        if self.restarted:
            logger.warning("resumable state %s is not reused: %s; starting this evaluation over", path, self.restarted)

    def get(self, name: str) -> Any | None:
        return self.entries.get(name)

    def put(self, name: str, value: Any) -> None:
        self.entries[name] = value
        if self.path is not None:
            atomic_write_json(self.path, {"key": self.key, "config": self.config, "entries": self.entries})
