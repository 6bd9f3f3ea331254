"""Where edge keeps the tools it provisions, shared by the converter (which installs them) and the
device side (which finds a Python with Paddle Lite there when the daemon's own Python has none).

`EDGE_CACHE_DIR` overrides the place; otherwise `$XDG_CACHE_HOME/edge` (default `~/.cache/edge`).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("EDGE_CACHE_DIR"):
        return Path(os.environ["EDGE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "edge"


def toolchain_dir(name: str) -> Path:
    """The folder of one installed toolchain (complete only when its READY file exists)."""
    return cache_root() / "toolchains" / name


READY_FILE = "READY.json"
