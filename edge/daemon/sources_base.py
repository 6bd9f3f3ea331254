"""What every source shares: the Frame it hands out, the Source interface, its error, its config base,
and the one-slot holder through which live sources keep only their newest frame."""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from runtimes.errors import ConfigError


@dataclass
class Frame:
    source: str                          # what result and error messages name as their source
    load: Callable[[], np.ndarray]       # -> BGR image; raises ImageError if it cannot be decoded
    index: int | None = None             # frame number in a video, or since a live source started
    timestamp: float | None = None       # time.time() when a live frame was captured; None for files
    key: str | None = None               # stable identity of a file input (for a processed-ledger); None if live


class SourceError(ConfigError):
    """A source cannot be used: a missing folder, file, device or port, or a spec that names none."""

    def __init__(self, message: str, *, field: str | None = "source", **where: Any):
        super().__init__(message, field=field, **where)


class SourceConfigBase(BaseModel):
    """The YAML form of a source; `target_field` is what the short string form's main part fills."""

    model_config = ConfigDict(extra="forbid")
    target_field: ClassVar[str] = "path"

    @classmethod
    def expand_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """String-form `?key=value` options -> config fields (a hook for shorthands)."""
        return options


class Source(ABC):
    """Hands out Frames without blocking; the daemon asks again after its poll interval when there is none."""

    kind: ClassVar[str] = ""
    config_model: ClassVar[type[SourceConfigBase]]
    live: ClassVar[bool] = False         # live: newest frame only, drops counted; else every input, in order

    @abstractmethod
    def __init__(self, config: Any, poll_interval: float = 0.5):
        """Open what `config` names; raise SourceError (one line) if it cannot be used."""

    @abstractmethod
    def next_frame(self) -> Frame | None:
        """The next frame if one is ready now, else None. Never blocks for long."""

    def wait_ready(self, timeout: float, stop: threading.Event) -> None:
        """Wait until a frame may be ready (a live source: until one arrives), at most `timeout` s."""
        stop.wait(timeout)

    def hold(self, held: bool) -> None:
        """The pipeline takes no frames for now (paused, or keeping its rate limit): a live source's
        frames replaced meanwhile are skipped on purpose, not counted as dropped."""

    @property
    def dropped(self) -> int:
        """Frames that arrived but were replaced by a newer one while the pipeline was busy."""
        return 0

    @property
    def finished(self) -> bool:
        """True once a finite source (a list, a video file) has handed out everything."""
        return False

    @property
    def connection(self) -> dict[str, Any] | None:
        """For sources that connect to something (a camera, a stream): `connected`, `reconnects`,
        `problem`; None for the others."""
        return None

    def take_changes(self) -> list[Any]:
        """Connection changes since the last call (lost, reconnected, ...), for the pipeline to publish."""
        return []

    def close(self) -> None:
        """Release whatever the source holds (a camera, a stream, a port, a thread)."""


class LatestFrameSlot:
    """One slot a grabber thread overwrites: the consumer always gets the newest frame.

    A frame replaced before anyone took it counts as dropped, unless the consumer said it holds
    (paused, rate-limited): then it counts as skipped. `latest` remembers the last frame put even
    after it was taken, for callers that want "what the camera sees now" (a serial trigger).
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._waiting: Frame | None = None
        self.latest: Frame | None = None
        self.dropped = 0
        self.skipped = 0
        self.put_count = 0
        self.held = False
        self._woken = False

    def put(self, frame: Frame) -> None:
        with self._ready:
            if self._waiting is not None:
                if self.held:
                    self.skipped += 1
                else:
                    self.dropped += 1
            self._waiting = self.latest = frame
            self.put_count += 1
            self._ready.notify_all()

    def take(self) -> Frame | None:
        with self._ready:
            frame, self._waiting = self._waiting, None
            return frame

    def wait(self, timeout: float) -> bool:
        """Until a frame waits, `wake()` was called, or `timeout` s passed; False for the last."""
        with self._ready:
            if self._waiting is None and not self._woken:
                self._ready.wait(timeout)
            woken, self._woken = self._woken, False
            return self._waiting is not None or woken

    def wake(self) -> None:
        """Let a waiting consumer go on without a frame (it has something else to look at)."""
        with self._ready:
            self._woken = True
            self._ready.notify_all()


class LiveSource(Source):
    """A source fed by a background thread through a LatestFrameSlot."""

    live = True
    WAIT_SLICE_S = 0.1          # a waiting pipeline looks at its stop flag this often

    def __init__(self, config: Any, poll_interval: float = 0.5):
        self.slot = LatestFrameSlot()
        self._stop = threading.Event()

    def next_frame(self) -> Frame | None:
        return self.slot.take()

    def wait_ready(self, timeout: float, stop: threading.Event) -> None:
        # Woken by the grabber the moment a frame arrives: the pipeline runs at the camera's rate,
        # whatever its poll interval.
        deadline = time.monotonic() + timeout
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.slot.wait(min(left, self.WAIT_SLICE_S)):
                return

    def hold(self, held: bool) -> None:
        self.slot.held = held

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def latest(self) -> Frame | None:
        """The newest frame grabbed, taken or not (None before the first one)."""
        return self.slot.latest


def image_loader(image: np.ndarray) -> Callable[[], np.ndarray]:
    """A Frame.load for an image that is already decoded (video, camera and stream frames)."""
    return lambda: image
