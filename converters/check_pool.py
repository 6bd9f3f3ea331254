"""Where emulated checks run: beside the builds, one at a time, then two at a time once the builds are done.

An emulated check (qemu-aarch64, one emulated thread) takes one core. While artifacts are still being built
(calibration, Paddle PTQ, judging: two threads), a second check would only slow them down, so one runs. When
the last build is done the checks still queued are all that is left, and the second core would sit idle:
then two run at once (PP-OCR for rpi4: its rec INT8 and FP32 checks, 85 s and 46 s, had been run one after the
other after every build was done).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

AT_ONCE_WHILE_BUILDING, AT_ONCE_AFTER = 1, 2


class CheckPool:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=AT_ONCE_AFTER, thread_name_prefix="emulated-check")
        self._permits = threading.Semaphore(AT_ONCE_WHILE_BUILDING)
        self._opened = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(self._gated, fn, *args)

    def _gated(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._permits:
            return fn(*args)

    def builds_done(self) -> None:
        """Let the queued checks use every worker from now on (once; later calls change nothing)."""
        if not self._opened:
            self._opened = True
            for _ in range(AT_ONCE_AFTER - AT_ONCE_WHILE_BUILDING):
                self._permits.release()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self) -> "CheckPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)
