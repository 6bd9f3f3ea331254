"""Where and how this device runs a bundle, apart from what the bundle is.

A bundle says what was built and in which order of preference; the device adds its own facts: the
daemon's state folder (where caches that outlive a restart go, e.g. TensorRT engines) and the
artifact its own measurement chose per model (`edge bench`), with why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class RunContext:
    state_dir: Path | None = None                            # None: caches stay in memory / beside the run
    prefer: Mapping[str, str] = field(default_factory=dict)  # model role -> artifact path in the bundle
    prefer_reason: str = ""                                   # e.g. "edge bench 2026-12-04: fastest that passed"
