"""Is the new bundle working? N frames without an error within T seconds of the switch, with every
pipeline thread alive and the daemon's main loop turning (it runs this check, and pings systemd's
watchdog from the same loop: a stuck loop both fails the check and gets the daemon restarted)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..daemon.worker import PipelineWorker


class HealthCheck:
    def __init__(self, workers: list["PipelineWorker"], frames: int, timeout: float):
        self.workers, self.frames, self.timeout = workers, frames, timeout
        self.started = time.monotonic()
        self._base = {w.name: (w.counts["results"], w.counts["errors"]) for w in workers}

    def _new(self, worker: "PipelineWorker", index: int) -> int:
        return worker.counts["results" if index == 0 else "errors"] - self._base[worker.name][index]

    def verdict(self) -> tuple[bool | None, str]:
        """(None, progress) while undecided, (True, summary) passed, (False, why) failed."""
        results = sum(self._new(w, 0) for w in self.workers)
        errors = sum(self._new(w, 1) for w in self.workers)
        dead = [f"{w.name}: {w.failure or 'stopped'}" for w in self.workers if w.failure or not w.alive]
        elapsed = time.monotonic() - self.started
        if dead:
            return False, f"pipeline died after the switch ({dead[0]})"
        if errors:
            last = next((w.state.saved().get("last_error") for w in self.workers if self._new(w, 1)), None)
            why = f": {last['error']}" if last else ""
            return False, f"{errors} frame(s) failed after the switch{why}"
        if results >= self.frames:
            return True, f"{results} frame(s) without error in {elapsed:.1f} s"
        if elapsed >= self.timeout:
            return False, (f"only {results} of {self.frames} frame(s) within {self.timeout:.0f} s of the switch "
                           "(no input, or the pipeline is stuck)")
        return None, f"{results}/{self.frames} frame(s)"
