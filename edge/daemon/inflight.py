"""Several frames of one pipeline in flight, their outcomes handed back in the order they were taken.

While one frame is inside the model, the next can be decoded and pre-processed: the runtimes (onnxruntime,
OpenVINO) release the GIL while they compute, so on a small CPU the Python work of one frame overlaps the
inference of another (bench/daemon_throughput.py --in-flight measures it). Results must still go out in the
order the inputs were taken (seq numbers, the ledger, rules that compare one frame with the last), so the
outcomes are finished one by one, oldest first, on the pipeline's own thread.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def _run(job: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(value=job())
    except Exception as err:     # handed to `finish`, which turns it into the frame's error message
        return Outcome(error=err)


class InFlight:
    """Runs at most `limit` jobs at once (`limit` 1: inline, no thread); `finish` gets each job's Outcome on
    the caller's thread, in submission order."""

    def __init__(self, most: int, name: str):
        self._pool = ThreadPoolExecutor(max_workers=most, thread_name_prefix=name) if most > 1 else None
        self._pending: deque[tuple[Future, Callable[[Outcome], None]]] = deque()

    def submit(self, job: Callable[[], Any], finish: Callable[[Outcome], None], limit: int) -> None:
        if self._pool is None or limit <= 1:
            self.drain()
            finish(_run(job))
            return
        self._pending.append((self._pool.submit(_run, job), finish))
        while len(self._pending) >= limit:          # a slot frees when the oldest frame is finished
            self._finish_oldest()
        while self._pending and self._pending[0][0].done():
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, finish = self._pending.popleft()
        finish(future.result())

    def drain(self) -> None:
        """Finish every frame still in flight (before the pipeline idles, pauses or stops)."""
        while self._pending:
            self._finish_oldest()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
