"""The RunContext a device opens a bundle with (state folder, its own artifact choice)."""
from __future__ import annotations

from pathlib import Path

from runtimes.bundle import Bundle
from runtimes.run_context import RunContext


def device_context(bundle: Bundle, state_dir: Path | None) -> RunContext:
    """How this device runs `bundle`: caches under `state_dir`."""
    return RunContext(state_dir=state_dir)
