"""The arm-emulator toolchain for the tests, installed for real, once, into a persistent test cache.

Where: $EDGE_TEST_CACHE_DIR, else the repo's git-ignored .cache/edge-test-cache (`make clean` empties
it). A fresh clone (CI) therefore installs from nothing (measured ~20 s here: apt lists, 32 .debs,
5 wheels); later runs on the same checkout find it installed and only run its check (~3 s). The
user's own cache (~/.cache/edge) is never touched by the tests.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from converters.toolchains.arm_emulator import ArmEmulatorToolchain

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_CACHE = Path(os.environ.get("EDGE_TEST_CACHE_DIR") or REPO_ROOT / ".cache" / "edge-test-cache")
DOWNLOADS = TEST_CACHE / "downloads" / "arm-emulator"
_installed: list[str] = []       # progress lines of this process's install (empty: it was there already)


@contextmanager
def edge_cache(path: Path) -> Iterator[Path]:
    """EDGE_CACHE_DIR pointed at `path` for the duration (restored after: other tests keep theirs)."""
    before = os.environ.get("EDGE_CACHE_DIR")
    os.environ["EDGE_CACHE_DIR"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("EDGE_CACHE_DIR", None)
        else:
            os.environ["EDGE_CACHE_DIR"] = before


def install_emulator() -> ArmEmulatorToolchain:
    """The installed toolchain in TEST_CACHE (call inside edge_cache(TEST_CACHE)); installs once per process."""
    chain = ArmEmulatorToolchain(_installed.append)
    if not _installed:
        status = chain.install()
        _installed.append(f"ready: {status.detail}")
    return chain
