"""The grabber shared by sources that connect to a device (V4L2 cameras, RTSP/HTTP streams): reading at
the device's rate, choosing frames, and the connection's life.

A thread reads frames as the device delivers them and hands the pipeline those it wants (every one,
every Nth, or about `fps` a second) through a one-frame slot that wakes the pipeline: the pipeline
runs at the camera's rate, and only a frame replaced while it was busy counts as dropped.

The connection's changes, each logged in one line of our own and queued for the pipeline to publish
(`edge.source/1` on its events topic):

    connected     first frames since the start
    lost          frames stopped: the stream ended, a read failed, or no frame came for `read_timeout_s`
                  (a stall; the frame such a late read returns is stale and is never handed out)
    failed        a (re)connection attempt failed for a reason not reported yet (refused, timeout, 401, ...)
    reconnected   frames again after a loss or failure

Retries wait a capped, jittered backoff (a camera is back within seconds of returning), except
configuration errors (401, 403, 404), which waiting cannot fix: those retry every `config_retry_s`.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2

from .backoff import Backoff
from .sources_base import Frame, LiveSource, image_loader
from .stream_errors import StreamProblem

log = logging.getLogger("edge.daemon.sources")

STALL_FRACTION = 0.9        # a read that took this much of the read timeout was cut short by it
MAX_PENDING_CHANGES = 64


@dataclass(frozen=True)
class ConnectionChange:
    change: str                          # connected, lost, failed, reconnected
    connected: bool
    reconnects: int                      # times frames came back after a loss or failure
    problem: StreamProblem | None = None
    retry_s: float | None = None         # when the next attempt is (lost, failed)
    down_s: float | None = None          # how long frames were away (reconnected, or connected after failures)
    ts: float = field(default_factory=time.time)


class RateGate:
    """Which grabbed frames go to the pipeline: every one, every Nth, or about `fps` a second."""

    def __init__(self, every: int = 1, fps: float | None = None):
        self.every, self.period = every, (1.0 / fps if fps else 0.0)
        self._count = 0
        self._due = float("-inf")

    def want(self, now: float) -> bool:
        if not self.period:
            self._count += 1
            return (self._count - 1) % self.every == 0
        # A frame a quarter period early still counts (15 fps at fps 5 gives 5 a second despite arrival
        # jitter, not 3.75); after a gap the schedule starts again from now rather than catching up.
        if now < self._due - self.period / 4:
            return False
        self._due = self._due + self.period if now - self._due < self.period else now + self.period
        return True


class CaptureSource(LiveSource):
    """The grabber, reconnects and connection reports; subclasses say how to check, open and diagnose."""

    name: str = ""
    read_timeout_s: float | None = None  # no frame for this long is a stall (None: the device's own timeout)
    config_retry_s: float = 60.0

    def __init__(self, config: Any, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self.gate = RateGate(config.every, config.fps)
        self.grabbed = 0              # frames read since the source started, across reconnects
        self.outages = 0              # times frames stopped after they had come
        self.reconnects = 0           # times frames came back after a loss or a failure
        self.connected = False
        self.problem: StreamProblem | None = None    # why it is not connected now
        self._first: cv2.VideoCapture | None = None   # a capture the constructor opened already
        # Bounded: a camera inside a serial trigger has no pipeline taking its changes.
        self._changes: deque[ConnectionChange] = deque(maxlen=MAX_PENDING_CHANGES)
        self._changes_lock = threading.Lock()
        self._reported: StreamProblem | None = None   # the failure last reported, so a repeat is not
        self._ever_connected = False
        self._down_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)
        self._thread.start()

    def _precheck(self) -> StreamProblem | None:
        """A cheap look before a full open (is anything there?); None to go on and open."""
        return None

    @abstractmethod
    def _open(self) -> tuple[cv2.VideoCapture | None, StreamProblem | None]:
        """An opened capture, or None and why it cannot be opened now."""

    # --- the grabber's thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            capture, self._first = self._first, None
            problem = None
            if capture is None:
                problem = self._precheck()
                if problem is None:
                    capture, problem = self._open()
            if capture is not None:
                problem = self._read_until_failure(capture)
                capture.release()
            if self._stop.is_set() or problem is None:
                break
            delay = self.config_retry_s if problem.config_error else self.backoff.next_delay()
            self._failed(problem, delay)
            self._stop.wait(delay)

    def _read_until_failure(self, capture: cv2.VideoCapture) -> StreamProblem | None:
        """Frames into the slot until the capture fails (why) or the source closes (None)."""
        delivered = 0
        while not self._stop.is_set():
            started = time.monotonic()
            ok = capture.grab()
            took = time.monotonic() - started
            if self.read_timeout_s and took >= self.read_timeout_s * STALL_FRACTION:
                # What a read cut short by its timeout returns is a frame the decoder held back from before
                # the stall: stale, so it is dropped, and the stream counts as lost now, not three reads later.
                return StreamProblem("stalled", f"no frame for {took:.1f} s (read timeout {self.read_timeout_s:g} s)")
            if not ok:
                return StreamProblem("ended", "the stream ended or a read failed" if delivered
                                     else "the stream opened but gave no frame")
            if not delivered:
                self._delivering(capture)
            delivered += 1
            index, self.grabbed = self.grabbed, self.grabbed + 1
            if not self.gate.want(started + took):
                continue                # not wanted: grabbed but never converted to a picture
            ok, image = capture.retrieve()     # a new array each call: frames in the slot are never reused
            if not ok or image is None:
                return StreamProblem("ended", "a frame could not be decoded")
            self.slot.put(Frame(source=f"{self.name}#frame={index}", load=image_loader(image),
                                index=index, timestamp=time.time()))
        return None

    # --- connection state --------------------------------------------------------------------------------
    def _delivering(self, capture: cv2.VideoCapture) -> None:
        """First frame of a connection."""
        attempts = self.backoff.failures
        self.backoff.reset()
        down_s = None if self._down_since is None else time.monotonic() - self._down_since
        change = "reconnected" if self._ever_connected else "connected"
        if change == "reconnected":
            self.reconnects += 1
        self.connected, self.problem, self._reported, self._down_since = True, None, None, None
        self._ever_connected = True
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        if change == "connected":
            log.info("%s connected: %dx%d at %.4g fps", self.name, width, height, fps)
        else:
            log.info("%s reconnected after %.1f s (%d failed attempt(s)): %dx%d at %.4g fps", self.name,
                     down_s or 0.0, attempts, width, height, fps)
        self._queue(ConnectionChange(change, True, self.reconnects, down_s=None if down_s is None
                                     else round(down_s, 3)))

    def _failed(self, problem: StreamProblem, delay: float) -> None:
        """An attempt failed, or frames stopped; reported when it is news, logged at debug level otherwise."""
        lost = self.connected
        self.connected, self.problem = False, problem
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not lost and self._reported is not None and self._reported.code == problem.code:
            log.debug("%s: attempt %d failed: %s; next in %.1f s", self.name, self.backoff.failures,
                      problem.reason, delay)
            return
        self._reported = problem
        if problem.config_error:
            then = f"a configuration error: check the URL; retrying every {delay:.0f} s"
        else:
            then = f"retrying in {delay:.1f} s (waits grow to {self.backoff.cap:g} s)"
        if lost:
            self.outages += 1
            log.warning("%s lost: %s; %s", self.name, problem.reason, then)
        else:
            log.warning("%s cannot be read: %s; %s", self.name, problem.reason, then)
        self._queue(ConnectionChange("lost" if lost else "failed", False, self.reconnects, problem,
                                     retry_s=round(delay, 3)))

    def _queue(self, change: ConnectionChange) -> None:
        with self._changes_lock:
            self._changes.append(change)
        self.slot.wake()

    def take_changes(self) -> list[ConnectionChange]:
        with self._changes_lock:
            changes = list(self._changes)
            self._changes.clear()
        return changes

    @property
    def connection(self) -> dict[str, Any]:
        problem = self.problem
        return {"connected": self.connected, "reconnects": self.reconnects,
                "problem": problem.code if problem else None, "reason": problem.reason if problem else None}

    def close(self) -> None:
        self._stop.set()
        self.slot.wake()
        thread = getattr(self, "_thread", None)
        # A read blocked on a dead stream returns at its read timeout; the thread is a daemon either way.
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("%s: grabber still waiting on the device; leaving it to exit", self.name)
