"""Paddle Lite backend for `.nb` artifacts, run in a worker process (runtimes/workers/paddle_lite_worker.py).

This process never imports paddlelite: the Python that has Paddle Lite is often not the daemon's
(PyPI's x86 wheel exists only for CPython <= 3.10; on a Pi the official ARM module is built for one
Python), and a native crash in Paddle Lite must cost one frame, not the daemon. The worker runs under
the first of:
  1. EDGE_PADDLE_LITE_PYTHON, a Python the user names;
  2. this very Python, when it can import paddlelite (a Pi with the official ARM Python module);
  3. the venv of edge's own toolchain (`edge toolchain install paddle-lite`, x86_64 hosts).
With none of them this module raises ImportError at import, so runtimes.backends lists the format
as unavailable with that message instead of failing elsewhere.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ..bundle import Artifact, RuntimeOptions
from ..errors import BackendError
from ..run_context import RunContext
from ..toolpaths import READY_FILE, toolchain_dir
from ..workers.client import WORKER_DIR, WorkerProcess
from .base import Backend

log = logging.getLogger(__name__)

WORKER_SCRIPT = WORKER_DIR / "paddle_lite_worker.py"
# Paddle Lite 2.13rc0's x86 runtime mishandles a predictor whose input shape changes: a smaller input
# crashes it, a larger one returns a wrong map without error (PP-OCRv4 det pages: max |diff| 1.0); the
# same shape again is exact. There each new shape gets a fresh predictor (a new worker, ~0.4 s). The
# ARM runtime could not be tried here; Paddle's own OCR demos reshape on ARM, so it is left alone.
FRESH_PREDICTOR_PER_SHAPE = {"x86_64", "AMD64"}
HOW_TO_GET = ("Paddle Lite is not installed for any Python here: on a Raspberry Pi install Paddle Lite's ARM "
              "Python module (docs/raspberry-pi.md), on an x86_64 host run `edge toolchain install paddle-lite`, "
              "or set EDGE_PADDLE_LITE_PYTHON to a Python that can import paddlelite")


def _toolchain_runtime() -> tuple[str, dict[str, str], str] | None:
    root = toolchain_dir("paddle-lite")
    try:
        info = json.loads((root / READY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    python = info.get("python")
    if not python or not Path(python).exists():
        return None
    return python, dict(info.get("env") or {}), f"edge's paddle-lite toolchain ({root})"


def find_runtime() -> tuple[str, dict[str, str], str] | None:
    """(python, extra environment, where it came from) of the Python that runs the worker, or None."""
    named = os.environ.get("EDGE_PADDLE_LITE_PYTHON")
    if named:
        return named, {}, "EDGE_PADDLE_LITE_PYTHON"
    if importlib.util.find_spec("paddlelite") is not None:    # finds, does not import
        return sys.executable, {}, "this Python"
    return _toolchain_runtime()


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(extra)
    if env.get("LD_LIBRARY_PATH") and os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] += ":" + os.environ["LD_LIBRARY_PATH"]
    return env


_named = os.environ.get("EDGE_PADDLE_LITE_PYTHON")
if _named and not Path(_named).exists():
    raise ImportError(f"EDGE_PADDLE_LITE_PYTHON={_named} does not exist")
if find_runtime() is None:
    raise ImportError(HOW_TO_GET)


class PaddleLiteBackend(Backend):
    format = "paddle_lite"

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None,
                 artifact: Artifact | None = None):
        super().__init__(path, runtime, context, artifact)
        found = find_runtime()
        if found is None:
            raise BackendError(HOW_TO_GET)
        python, env, where = found
        self.worker = WorkerProcess([python, str(WORKER_SCRIPT)], {"path": str(path), "threads": runtime.threads},
                                    name=f"Paddle Lite ({path.name})", env=_worker_env(env))
        info = self.worker.start()         # BackendError saying why when the file does not load
        self._inputs, self._outputs = list(info["inputs"]), list(info["outputs"])
        self._fresh_per_shape = info.get("machine") in FRESH_PREDICTOR_PER_SHAPE
        # What runs the model, in the same terms the onnxruntime backend reports its execution providers.
        self.providers_in_use = [f"paddle_lite ({info.get('machine') or 'unknown CPU'} worker)"]
        self._shapes: tuple | None = None
        self.reshapes = 0
        log.info("Paddle Lite %s runs %s in worker %s (Python %s from %s)%s", info.get("paddlelite"), path.name,
                 self.worker.pid, info.get("python"), where,
                 "" if info.get("threads_applied") or runtime.threads <= 0 else
                 f"; this build cannot set threads, {runtime.threads} ignored")

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.require_inputs(feeds)
        shapes = tuple(tuple(feeds[name].shape) for name in self._inputs)
        if self._fresh_per_shape and self._shapes is not None and shapes != self._shapes:
            self.worker.close()            # see FRESH_PREDICTOR_PER_SHAPE
            self.worker.start()
            self.reshapes += 1
        self._shapes = shapes
        return self.worker.call({name: np.ascontiguousarray(feeds[name]) for name in self._inputs})

    def close(self) -> None:
        self.worker.close()
