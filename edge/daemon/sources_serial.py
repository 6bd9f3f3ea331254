"""A serial trigger: a line on a serial port (a PLC, a light barrier, a button on a microcontroller)
asks for one frame from another source, the `grab` source.

For a live grab source (camera, stream) the frame is what it sees at that moment: its grabber runs
all along, because a camera opened only on demand hands out stale buffered pictures. For a file
grab source (folder, list, video) each trigger takes the next input. Triggers that come faster than
the pipeline takes frames replace the waiting one (counted in `dropped`); a trigger with no fresh
frame to give is counted in `missed`. The port is reopened with backoff when it disappears.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import serial
from pydantic import Field, field_validator

from .backoff import Backoff
from .sources_base import Frame, LiveSource, Source, SourceConfigBase, SourceError
from .sources_files import FolderConfig, ListConfig, VideoConfig
from .sources_live import CameraConfig, StreamConfig

log = logging.getLogger("edge.daemon.sources")

MAX_LINE = 256                 # bytes; longer garbage (wrong baud rate, a binary protocol) is discarded
READ_TIMEOUT_S = 0.2           # how often the reader looks at the stop flag
GRAB_KINDS = ("folder", "list", "video", "camera", "stream")   # string-form shorthands: camera=0, ...

GrabConfig = Annotated[Union[FolderConfig, ListConfig, VideoConfig, CameraConfig, StreamConfig],
                       Field(discriminator="type")]


class SerialTriggerConfig(SourceConfigBase):
    type: Literal["serial"] = "serial"
    target_field = "port"
    port: str                                   # /dev/ttyUSB0, or better a /dev/serial/by-id/... name
    baud: int = Field(115200, gt=0)
    trigger: str | None = None                  # the line (stripped) that asks for a frame; None: any line
    grab: GrabConfig
    max_age_s: float = Field(2.0, gt=0)         # a live picture older than this is not "now"
    retry_initial_s: float = Field(0.5, gt=0, le=60)
    retry_max_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("grab", mode="before")
    @classmethod
    def _grab_spec(cls, value: Any) -> Any:
        from .sources import fields_from_string   # the grammar lives with the registry, which imports this module
        return fields_from_string(value)

    @classmethod
    def expand_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """`camera=0` means `grab=camera:0`, `stream=URL` means `grab=URL`, and so on."""
        options = dict(options)
        for kind in GRAB_KINDS:
            if kind in options:
                value = options.pop(kind)
                options["grab"] = value if kind == "stream" else f"{kind}:{value}"
        return options


class SerialTriggerSource(LiveSource):
    kind = "serial"
    config_model = SerialTriggerConfig

    def __init__(self, config: SerialTriggerConfig, poll_interval: float = 0.5):
        super().__init__(config, poll_interval)
        self.config = config
        self.name = f"serial:{config.port}"
        self.triggers = 0              # trigger lines received
        self.missed = 0                # triggers with no fresh frame to give
        self.outages = 0               # times the port went away
        self.connected = False
        self.backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self._ahead: Frame | None = None
        self._last_error = ""
        if not Path(config.port).exists():
            raise SourceError(f"serial port {config.port}: no such device")
        port = self._open()
        if port is None:
            raise SourceError(f"serial port {config.port}: cannot be opened ({self._last_error})")
        from .sources import open_source    # the registry imports this module; open the grab source through it
        try:
            self.inner: Source = open_source(config.grab, poll_interval)
        except BaseException:
            port.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(port,), name=f"source {self.name}", daemon=True)
        self._thread.start()

    def _open(self) -> serial.Serial | None:
        try:
            port = serial.Serial(self.config.port, self.config.baud, timeout=READ_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as err:
            self._last_error = str(err)
            return None
        self.connected = True
        return port

    def _run(self, port: serial.Serial | None) -> None:
        while not self._stop.is_set():
            if port is None:
                port = self._open()
            if port is None:
                delay = self.backoff.next_delay()
                log.debug("%s: reopen failed (%s); next try in %.2f s", self.name, self._last_error, delay)
                self._stop.wait(delay)
                continue
            if self.backoff.failures:
                log.info("%s is back after %d attempt(s)", self.name, self.backoff.failures)
            self.backoff.reset()
            try:
                self._listen(port)
            except (serial.SerialException, OSError) as err:
                self.outages += 1
                log.warning("%s lost (%s); reopening with backoff up to %g s", self.name, err, self.backoff.cap)
            finally:
                port.close()
                port, self.connected = None, False

    def _listen(self, port: serial.Serial) -> None:
        """Fire on each complete line until the port fails (raises) or the source closes."""
        pending = bytearray()
        while not self._stop.is_set():
            self._look_ahead()
            pending += port.read(max(1, port.in_waiting))
            *lines, rest = pending.split(b"\n")
            pending = bytearray(rest)
            if len(pending) > MAX_LINE:
                log.warning("%s: discarding %d bytes with no line end (wrong baud rate?)", self.name, len(pending))
                pending.clear()
            for raw in lines:
                text = raw.decode("utf-8", "replace").strip()
                if text and (self.config.trigger is None or text == self.config.trigger):
                    self._fire(text)
                elif text:
                    log.debug("%s: ignoring line %r", self.name, text[:40])

    def _fire(self, line: str) -> None:
        self.triggers += 1
        frame = self._grab()
        if frame is None:
            self.missed += 1
            log.warning("%s: trigger %d (%r) but %s has no fresh frame", self.name, self.triggers, line[:40],
                        getattr(self.inner, "name", self.config.grab.type))
            return
        self.slot.put(Frame(source=f"{frame.source} (trigger {self.triggers})", load=frame.load,
                            index=self.triggers, timestamp=frame.timestamp or time.time(), key=frame.key))

    @property
    def ready(self) -> bool:
        """Whether a trigger now would get a frame (for status, and for tests to know when to trigger)."""
        if isinstance(self.inner, LiveSource):
            frame = self.inner.latest()
            return frame is not None and time.time() - (frame.timestamp or 0) <= self.config.max_age_s
        return self._ahead is not None

    def _look_ahead(self) -> None:
        """Keep the next input of a file grab source at hand: a folder only finds (and lets settle) new
        files when it is asked, so asking first when the trigger comes would mostly find nothing."""
        if self._ahead is None and not isinstance(self.inner, LiveSource):
            self._ahead = self.inner.next_frame()

    def _grab(self) -> Frame | None:
        if isinstance(self.inner, LiveSource):
            return self.inner.latest() if self.ready else None
        self._look_ahead()
        frame, self._ahead = self._ahead, None
        return frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.inner.close()
