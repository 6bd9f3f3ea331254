"""Live sources read through OpenCV's VideoCapture: a camera (V4L2) and network streams (RTSP, HTTP MJPEG).

The grabbing, frame choice (`every`, `fps`), stall detection, reconnects and connection reports are
`sources_capture.CaptureSource`'s; here is what differs: how each opens, and how a stream's failure
is explained (`stream_errors`). FFmpeg's own log lines are silenced (they would reach the log raw,
and say nothing our one-line reasons do not): set OPENCV_FFMPEG_LOGLEVEL (e.g. 32) to see them again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import cv2
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .sources_base import SourceConfigBase, SourceError
from .sources_capture import CaptureSource
from .stream_errors import StreamProblem, diagnose, reach

log = logging.getLogger("edge.daemon.sources")

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
PRECHECK_TIMEOUT_S = 5.0       # at most this long for the TCP look before each (re)connection attempt

# Read when OpenCV first opens an FFmpeg capture: -8 is FFmpeg's AV_LOG_QUIET. OpenCV's own warnings
# about captures ("backend is generally available but can't be used", "Stream timeout triggered")
# would repeat every retry; our log says why instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# OpenCV takes FFmpeg's options for a capture from this variable, read as the capture opens: one process
# value, so streams with different options open one at a time. Whatever the user set there wins.
_FFMPEG_OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_USER_FFMPEG_OPTIONS = os.environ.get(_FFMPEG_OPTIONS_VAR, "")
_FFMPEG_OPEN_LOCK = threading.Lock()
# The frame rate comes from the stream's own description; FFmpeg would otherwise read 20 frames
# (1.3 s at 15 fps) to measure it before the first frame, at every reconnect.
RTSP_OPTIONS = {"fpsprobesize": "0"}


class CaptureConfigBase(SourceConfigBase):
    """`every`: hand the pipeline every Nth frame; `fps`: about this many frames a second. One of them."""

    every: int = Field(1, ge=1)
    fps: float | None = Field(None, gt=0)
    retry_initial_s: float = Field(0.5, gt=0, le=60)    # first wait after a failure, doubled each time
    retry_max_s: float = Field(2.0, gt=0, le=3600)      # the cap of that wait: a camera back is read this soon

    @model_validator(mode="after")
    def _one_rate(self) -> "CaptureConfigBase":
        if self.fps is not None and self.every != 1:
            raise _problem("give 'every' or 'fps', not both")
        return self


class CameraConfig(CaptureConfigBase):
    """`fps` also asks the device for that rate (a camera that ignores it is thinned to it)."""

    type: Literal["camera"] = "camera"
    target_field = "device"
    device: int | str                     # V4L2 index (0) or device path (/dev/video0, /dev/v4l/by-id/...)
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fourcc: str | None = Field(None, min_length=4, max_length=4)   # e.g. MJPG: many USB cameras need it for HD

    @field_validator("device", mode="before")
    @classmethod
    def _index_if_digits(cls, value: object) -> object:
        return int(value) if isinstance(value, str) and value.isdigit() else value


class StreamConfig(CaptureConfigBase):
    type: Literal["stream"] = "stream"
    target_field = "url"
    url: str                                               # (before `transport`, which checks it)
    transport: Literal["tcp", "udp"] | None = None         # RTSP only; default tcp (works through NAT)
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)       # no frame for this long: the stream is lost
    config_retry_s: float = Field(60.0, gt=0, le=86400)    # wait after a 401/403/404 (a wrong URL or password)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme.lower() not in STREAM_SCHEMES:
            raise _problem(f"'{redact_url(value)}' is not a stream URL (use {', '.join(STREAM_SCHEMES)})")
        return value

    @field_validator("transport")
    @classmethod
    def _transport_for_rtsp(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not str(info.data.get("url", "rtsp")).lower().startswith("rtsp"):
            raise _problem("'transport' applies to rtsp:// and rtsps:// streams only")
        return value


def _problem(message: str) -> PydanticCustomError:
    # A custom error keeps the message as written (a ValueError would get a "Value error, " prefix).
    return PydanticCustomError("edge_source", message)


def redact_url(url: str) -> str:
    """The URL without its password: it goes into logs and into every result's `source`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


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
        self._first, problem = self._open()
        if problem is not None:
            raise SourceError(f"camera {device}: {problem.reason}")
        self.start()

    def _precheck(self) -> StreamProblem | None:
        if not self.path.exists():
            return StreamProblem("unreachable", f"{self.path} is gone (unplugged?)")
        return None

    def _open(self) -> tuple[cv2.VideoCapture | None, StreamProblem | None]:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_V4L2)
        if not capture.isOpened():
            return None, StreamProblem("unreadable", f"{self.path} cannot be opened for capture "
                                                     "(busy, no permission, or not a capture node)")
        settings = ((cv2.CAP_PROP_FOURCC, self.config.fourcc and cv2.VideoWriter_fourcc(*self.config.fourcc)),
                    (cv2.CAP_PROP_FRAME_WIDTH, self.config.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.config.height),
                    (cv2.CAP_PROP_FPS, self.config.fps))
        for prop, value in settings:
            if value and not capture.set(prop, value):
                log.warning("%s does not accept property %d = %s; using its default", self.name, prop, value)
        return capture, None


class StreamSource(CaptureSource):
    """An RTSP or HTTP(S) stream (MJPEG, H.264, ... whatever OpenCV's FFmpeg reads). Down at start is
    not an error: cameras and servers boot in any order, so the grabber keeps trying."""

    kind = "stream"
    config_model = StreamConfig

    def __init__(self, config: StreamConfig, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.config = config
        self.name = redact_url(config.url)
        self.read_timeout_s, self.config_retry_s = config.read_timeout_s, config.config_retry_s
        self._ffmpeg_options = ffmpeg_options(config)
        self.start()

    def _precheck(self) -> StreamProblem | None:
        return reach(self.config.url, min(self.config.open_timeout_s, PRECHECK_TIMEOUT_S))

    def _open(self) -> tuple[cv2.VideoCapture | None, StreamProblem | None]:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000)]
        started = time.monotonic()
        with _FFMPEG_OPEN_LOCK:
            _set_options(self._ffmpeg_options)
            try:
                capture = cv2.VideoCapture(self.config.url, cv2.CAP_FFMPEG, params)
            finally:
                _set_options(_USER_FFMPEG_OPTIONS)
        if capture.isOpened():
            return capture, None
        capture.release()
        took = time.monotonic() - started
        if took >= self.config.open_timeout_s * 0.9:      # asking again would wait as long: it is a timeout
            return None, StreamProblem("timeout", f"{self.name} accepted the connection but sent no stream "
                                                  f"within {self.config.open_timeout_s:g} s")
        return None, diagnose(self.config.url, min(self.config.open_timeout_s, PRECHECK_TIMEOUT_S))


def ffmpeg_options(config: StreamConfig) -> str:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS for this stream ("key;value|key;value"), the user's own winning."""
    options: dict[str, str] = {}
    if config.url.lower().startswith("rtsp"):
        options.update(RTSP_OPTIONS, rtsp_transport=config.transport or "tcp")
    for pair in filter(None, _USER_FFMPEG_OPTIONS.split("|")):
        key, _, value = pair.partition(";")
        options[key] = value
    return "|".join(f"{key};{value}" for key, value in options.items())


def _set_options(options: str) -> None:
    if options:
        os.environ[_FFMPEG_OPTIONS_VAR] = options
    else:       # unset, not empty: OpenCV then applies its own defaults
        os.environ.pop(_FFMPEG_OPTIONS_VAR, None)
