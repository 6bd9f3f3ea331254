"""The contract of a tool edge provisions (Paddle Lite's `opt`, the aarch64 emulator root).

Installs are cached under runtimes.toolpaths.toolchain_dir(name), idempotent, safe when two
converts start at once (an flock per toolchain), and atomic: a toolchain is built in a staging
folder and renamed into place with a READY file last, so a half-finished install (killed, disk
full) is never mistaken for a good one and is simply built again.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from runtimes.errors import EdgeError
from runtimes.toolpaths import READY_FILE, toolchain_dir


class ToolchainError(EdgeError):
    """A toolchain cannot be installed or is not installed; the message says what to do."""


@dataclass
class ToolchainStatus:
    name: str
    installed: bool
    path: Path
    detail: str                          # one line: versions when installed, what is wrong otherwise
    info: dict = field(default_factory=dict)


class Toolchain(ABC):
    """Subclasses set `name` and `summary` and implement `_build` and `_check`."""

    name: str = ""
    summary: str = ""

    def __init__(self, progress: Callable[[str], None] = lambda message: None):
        self.progress = progress

    @property
    def path(self) -> Path:
        return toolchain_dir(self.name)

    @abstractmethod
    def _build(self, staging: Path) -> dict:
        """Make the whole toolchain inside `staging` (an empty folder); return facts for READY.json.

        Paths written into the toolchain must be valid after `staging` is renamed to self.path."""

    @abstractmethod
    def _check(self, root: Path, info: dict) -> str | None:
        """None when the installed toolchain at `root` works; else one line saying what is wrong."""

    def _ready_info(self) -> dict | None:
        try:
            return json.loads((self.path / READY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def status(self) -> ToolchainStatus:
        info = self._ready_info()
        if info is None:
            state = "half-finished (will be rebuilt)" if self.path.exists() else "not installed"
            return ToolchainStatus(self.name, False, self.path, f"{state}: edge toolchain install {self.name}")
        problem = self._check(self.path, info)
        if problem:
            return ToolchainStatus(self.name, False, self.path,
                                   f"broken ({problem}): edge toolchain install {self.name} repairs it", info)
        return ToolchainStatus(self.name, True, self.path, info.get("summary", "installed"), info)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f"{self.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress(f"{self.name}: another edge process is installing it; waiting")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def install(self, force: bool = False) -> ToolchainStatus:
        """Install unless a working copy is there (another process may have just made it)."""
        with self._locked():
            # staging folders left by killed installs (any pid): only the lock holder builds, so none is live
            for stale in self.path.parent.glob(f".{self.name}.staging-*"):
                shutil.rmtree(stale, ignore_errors=True)
            current = self.status()
            if current.installed and not force:
                return current
            staging = self.path.with_name(f".{self.name}.staging-{os.getpid()}")
            staging.mkdir(parents=True)
            started = time.monotonic()
            try:
                info = self._build(staging)
            except OSError as err:
                shutil.rmtree(staging, ignore_errors=True)
                raise ToolchainError(_os_error_line(self.name, err)) from None
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            info = {**info, "seconds": round(time.monotonic() - started, 1)}
            shutil.rmtree(self.path, ignore_errors=True)
            staging.rename(self.path)
            (self.path / READY_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
            done = self.status()
            if not done.installed:
                raise ToolchainError(f"{self.name}: installed but it does not work: {done.detail}")
            self.progress(f"{self.name}: installed in {info['seconds']:.0f} s at {self.path}")
            return done

    def ensure(self, allow_install: bool = True) -> ToolchainStatus:
        """What a convert calls: the working toolchain, installed on first use unless forbidden."""
        current = self.status()
        if current.installed:
            return current
        if not allow_install:
            raise ToolchainError(f"{self.name} is needed and {current.detail.split(':')[0]}; "
                                 f"install it with: edge toolchain install {self.name}")
        self.progress(f"{self.name}: not installed yet; installing it once into {self.path}")
        return self.install()

    def remove(self) -> bool:
        with self._locked():
            existed = self.path.exists()
            shutil.rmtree(self.path, ignore_errors=True)
            return existed


def _os_error_line(name: str, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return f"{name}: the disk is full ({err.filename or 'cache folder'}); free space and run it again"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{name}: cannot write {err.filename}: {err.strerror}; set EDGE_CACHE_DIR to a writable "
                "folder")
    return f"{name}: {err.strerror or err} ({err.filename or ''})"


REGISTRY_HINTS = ("Could not find a version", "No matching distribution", "Failed to establish",
                  "Temporary failure in name resolution", "Connection refused", "Network is unreachable",
                  "Could not resolve", "Failed to fetch", "Unable to connect", "Read timed out",
                  "Cannot initiate the connection", "Unable to locate package")


def run_step(argv: list[str], what: str, toolchain: str, env: dict[str, str] | None = None,
             timeout: float = 900, cwd: Path | None = None) -> str:
    """Run one provisioning command; any failure becomes one line that says what failed and what to do."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise ToolchainError(f"{toolchain}: {what} needs '{argv[0]}', which is not on this machine") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{toolchain}: {what} took over {timeout:.0f} s; is the package registry "
                             "reachable? run it again when it is") from None
    if proc.returncode == 0:
        return proc.stdout
    text = proc.stderr + proc.stdout
    if "No space left on device" in text:
        raise ToolchainError(f"{toolchain}: {what} failed: the disk is full; free space and run it again")
    offline = next((hint for hint in REGISTRY_HINTS if hint in text), None)
    if offline:
        raise ToolchainError(f"{toolchain}: {what} failed: the package registry cannot be reached or has no "
                             f"such package ({offline}); check the network/proxy and run it again")
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), f"exit {proc.returncode}")
    raise ToolchainError(f"{toolchain}: {what} failed: {last[:300]}")
