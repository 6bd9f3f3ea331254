"""The update's journal: one JSON file in the state folder naming the step reached, written before and
after each step (to a temporary file, synced, renamed over the old one), so that after a power cut or a
`kill -9` the daemon knows what it was doing and ends with a working slot (see `agent.recover`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .slots import sync_dir

FILE = "journal.json"


class Journal:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / FILE

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # a rename is atomic, so a torn journal cannot happen; a hand-edited one must not stop the daemon
            return {"step": "failed", "error": f"unreadable journal {self.path}"}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{FILE}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        sync_dir(self.folder)
