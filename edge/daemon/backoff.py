"""Waits between reconnect attempts: exponential, capped, jittered.

Jitter keeps a fleet of devices that lost the same camera server or USB hub from retrying in
lockstep. A cap keeps a device that was away for an hour from waiting an hour after it is back.
"""
from __future__ import annotations

import random
from collections import deque


class Backoff:
    """`next_delay()` gives initial, 2x, 4x, ... up to `cap` seconds, each times 1 +- `jitter`;
    `reset()` after a success starts again at `initial`. The last delays are kept in `history`
    so logs and tests can see what was waited."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0, jitter: float = 0.2,
                 rng: random.Random | None = None):
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self._rng = rng or random.Random()
        self._base = initial
        self.failures = 0                       # consecutive, since the last reset
        self.history: deque[float] = deque(maxlen=32)

    def next_delay(self) -> float:
        delay = min(self._base, self.cap) * (1 + self._rng.uniform(-self.jitter, self.jitter))
        self._base = min(self._base * self.factor, self.cap)
        self.failures += 1
        self.history.append(delay)
        return delay

    def reset(self) -> None:
        self._base = self.initial
        self.failures = 0
