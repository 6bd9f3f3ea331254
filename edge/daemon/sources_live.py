"""Live sources read through OpenCV's VideoCapture: a camera (V4L2) and network streams (RTSP, HTTP MJPEG).

A grabber thread reads as fast as the device delivers and overwrites one slot, so the pipeline always
gets the newest picture and a slow pipeline shows up as `dropped`, not as latency growing without
bound. When the capture fails or ends, the grabber reopens it with capped, jittered exponential backoff.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import cv2
from pydantic import Field, field_validator

from .backoff import Backoff
from .sources_base import Frame, LiveSource, SourceConfigBase, SourceError, image_loader

log = logging.getLogger("edge.daemon.sources")

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")


class CaptureConfigBase(SourceConfigBase):
    retry_initial_s: float = Field(0.5, gt=0, le=60)    # first wait after a failure, doubled each time
    retry_max_s: float = Field(30.0, gt=0, le=3600)     # the cap of that wait


class CameraConfig(CaptureConfigBase):
    type: Literal["camera"] = "camera"
    target_field = "device"
    device: int | str                     # V4L2 index (0) or device path (/dev/video0, /dev/v4l/by-id/...)
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fps: float | None = Field(None, gt=0)
    fourcc: str | None = Field(None, min_length=4, max_length=4)   # e.g. MJPG: many USB cameras need it for HD

    @field_validator("device", mode="before")
    @classmethod
    def _index_if_digits(cls, value: object) -> object:
        return int(value) if isinstance(value, str) and value.isdigit() else value


class StreamConfig(CaptureConfigBase):
    type: Literal["stream"] = "stream"
    target_field = "url"
    url: str
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(10.0, gt=0, le=300)     # no frame for this long: the stream is dead

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme.lower() not in STREAM_SCHEMES:
            raise ValueError(f"'{redact_url(value)}' is not a stream URL (use {', '.join(STREAM_SCHEMES)})")
        return value


def redact_url(url: str) -> str:
    """The URL without its password: it goes into logs and into every result's `source`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class CaptureSource(LiveSource):
    """The grabber, reconnect and backoff shared by cameras and streams; subclasses say how to open."""

    name: str = ""

    def __init__(self, config: CaptureConfigBase, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self.grabbed = 0              # frames read since the source started, across reconnects
        self.outages = 0              # times the capture failed or ended after delivering frames
        self.connected = False
        self._first: cv2.VideoCapture | None = None   # a capture the constructor opened already

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)
        self._thread.start()

    @abstractmethod
    def _open(self) -> cv2.VideoCapture | None:
        """An opened capture, or None if it cannot be opened now."""

    def _run(self) -> None:
        outage_logged = False
        while not self._stop.is_set():
            capture = self._first if self._first is not None else self._open()
            self._first = None
            if capture is not None:
                delivered = self._read_until_failure(capture)
                capture.release()
                self.connected = False
                if self._stop.is_set():
                    break
                if delivered:
                    self.outages += 1
                    outage_logged = True
                    log.warning("%s lost after %d frame(s); reconnecting with backoff up to %g s",
                                self.name, delivered, self.backoff.cap)
            if not outage_logged:
                log.warning("%s cannot be opened or gives no frames; retrying with backoff up to %g s",
                            self.name, self.backoff.cap)
                outage_logged = True
            delay = self.backoff.next_delay()
            log.debug("%s: attempt %d failed; next in %.2f s", self.name, self.backoff.failures, delay)
            self._stop.wait(delay)

    def _read_until_failure(self, capture: cv2.VideoCapture) -> int:
        """Read frames into the slot until the capture fails or the source closes; how many were read."""
        delivered = 0
        while not self._stop.is_set():
            ok, image = capture.read()       # a new array each call: frames in the slot are never reused
            if not ok or image is None:
                break
            if not delivered:
                if self.backoff.failures:
                    log.info("%s delivering frames again after %d attempt(s)", self.name, self.backoff.failures)
                self.backoff.reset()
                self.connected = True
            delivered += 1
            index, self.grabbed = self.grabbed, self.grabbed + 1
            self.slot.put(Frame(source=f"{self.name}#frame={index}", load=image_loader(image),
                                index=index, timestamp=time.time()))
        return delivered

    def close(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        # A read blocked on a dead stream returns at its read timeout; the thread is a daemon either way.
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("%s: grabber still waiting on the device; leaving it to exit", self.name)


class CameraSource(CaptureSource):
    """A V4L2 camera by index or device path. Missing at start is an error; unplugged later, it is retried."""

    kind = "camera"
    config_model = CameraConfig

    def __init__(self, config: CameraConfig, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.config = config
        device = config.device
        self.path = Path(f"/dev/video{device}") if isinstance(device, int) else Path(device)
        self.name = f"camera:{device}"
        if not self.path.exists():
            raise SourceError(f"camera {device}: no such device ({self.path} does not exist)")
        self._first = self._open()
        if self._first is None:
            raise SourceError(f"camera {device}: {self.path} cannot be opened for capture "
                              "(busy, no permission, or not a capture node)")
        self.start()

    def _open(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_V4L2)
        if not capture.isOpened():
            return None
        settings = ((cv2.CAP_PROP_FOURCC, self.config.fourcc and cv2.VideoWriter_fourcc(*self.config.fourcc)),
                    (cv2.CAP_PROP_FRAME_WIDTH, self.config.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.config.height),
                    (cv2.CAP_PROP_FPS, self.config.fps))
        for prop, value in settings:
            if value and not capture.set(prop, value):
                log.warning("%s does not accept property %d = %s; using its default", self.name, prop, value)
        return capture


class StreamSource(CaptureSource):
    """An RTSP or HTTP(S) stream (MJPEG, H.264, ... whatever OpenCV's FFmpeg reads). Down at start is
    not an error: cameras and servers boot in any order, so the grabber keeps trying."""

    kind = "stream"
    config_model = StreamConfig

    def __init__(self, config: StreamConfig, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.config = config
        self.name = redact_url(config.url)
        self.start()

    def _open(self) -> cv2.VideoCapture | None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000)]
        capture = cv2.VideoCapture(self.config.url, cv2.CAP_FFMPEG, params)
        return capture if capture.isOpened() else None
