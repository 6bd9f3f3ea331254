"""The parent's side of a model worker: start it, send frames, survive its death.

A worker can die natively (a segfault in Paddle Lite, an OOM kill, SIGKILL): the frame being run
then fails with one BackendError naming the signal, and the next call starts a fresh worker, so a
daemon keeps running. A worker that does not answer within `call_timeout` is killed the same way.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import BackendError
from .protocol import ChannelClosed, read_frame, write_frame

log = logging.getLogger(__name__)
WORKER_DIR = Path(__file__).resolve().parent


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class WorkerProcess:
    """One model in one child process: `call(arrays) -> outputs`, restarted after a crash."""

    def __init__(self, argv: list[str], load: dict, name: str, env: dict[str, str] | None = None,
                 start_timeout: float = 300.0, call_timeout: float = 600.0):
        self.argv, self.load, self.name = argv, load, name
        self.env = {**os.environ, **(env or {})}
        self.start_timeout, self.call_timeout = start_timeout, call_timeout
        self.info: dict = {}
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def _exchange(self, header: dict, arrays: dict[str, np.ndarray] | None, timeout: float):
        proc = self._proc
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            write_frame(proc.stdin, header, arrays)
            return read_frame(proc.stdout)
        except (ChannelClosed, BrokenPipeError, OSError):
            timed_out = not timer.is_alive()
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            self._proc = None
            why = f"did not answer within {timeout:.0f} s" if timed_out else _how_it_ended(code)
            tail = self._stderr_tail()
            raise BackendError(f"{self.name} worker {why}" + (f" ({tail})" if tail else "")) from None
        finally:
            timer.cancel()

    def start(self) -> dict:
        if self._proc is not None:
            return self.info
        self._stderr = tempfile.TemporaryFile()
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, env=self.env)
        except OSError as err:
            raise BackendError(f"{self.name} worker cannot start ({self.argv[0]}): {err.strerror}") from None
        reply, _ = self._exchange(self.load, None, self.start_timeout)
        if not reply.get("ok"):
            self.close()
            raise BackendError(f"{self.name} cannot load the model: {reply.get('error')}")
        self.info = {k: v for k, v in reply.items() if k != "ok"}
        log.debug("%s worker %d ready in %.1f s", self.name, self._proc.pid, time.monotonic() - started)
        return self.info

    def call(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            if self._proc is None and self.info:
                self.restarts += 1
                log.warning("%s worker restarting (restart %d)", self.name, self.restarts)
            self.start()
            reply, outputs = self._exchange({"op": "run"}, arrays, self.call_timeout)
        if not reply.get("ok"):
            raise BackendError(f"{self.name} failed on this input: {reply.get('error')}")
        return [outputs[f"out{i}"] for i in range(reply["outputs"])]

    def command(self, op: str, **fields) -> dict:
        """A named command the worker serves besides inference (protocol.serve's `commands`): its JSON
        reply. The worker is started if needed; a worker that died is not restarted silently here, since
        a command may depend on an earlier one."""
        with self._lock:
            if self._proc is None and self.info:
                raise BackendError(f"{self.name} worker is gone (it ended before '{op}')")
            self.start()
            reply, _ = self._exchange({**fields, "op": op}, None, self.call_timeout)
        if not reply.get("ok"):
            raise BackendError(f"{self.name}: {op} failed: {reply.get('error')}")
        return {k: v for k, v in reply.items() if k != "ok"}

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                write_frame(proc.stdin, {"op": "close"})
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
