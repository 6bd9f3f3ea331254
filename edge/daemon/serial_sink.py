"""Result lines on a serial port, for a PLC, a microcontroller or a display that reads a UART.

`SerialSink.write(message)` formats one line and queues it; a background thread writes the queue to
the port, so a slow, absent or unplugged device never holds up the pipeline. The queue is bounded:
when it is full the oldest line is dropped and counted (`dropped`), since for a device that shows
"what is there now" the newest results matter most. A port that fails or disappears is reopened
with backoff; point `port` at a stable /dev/serial/by-id/... name so a replugged adapter is found again.

Formats: `json` (default) a compact object per line: id, seq, ts, pipeline, source, count, labels;
`json-full` the whole message on one line; anything else is a template over the same fields, e.g.
"{pipeline} {count} {labels}" (labels comma-joined there; `{score:.2f}` style format specs work).
"""
from __future__ import annotations

import json
import logging
import string
import threading
from collections import deque
from typing import Any, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .backoff import Backoff

log = logging.getLogger("edge.daemon.serial")

TEMPLATE_FIELDS = ("id", "seq", "ts", "device", "pipeline", "source", "count", "labels", "top", "score")
_SAMPLE = {"id": "0" * 32, "seq": 1, "ts": "2025-01-01T00:00:00.000Z", "device": "d", "pipeline": "p",
           "source": "s", "count": 2, "labels": "a,b", "top": "a", "score": 0.5}


class SerialSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["serial"] = "serial"
    port: str
    baud: int = Field(115200, gt=0)
    format: str = "json"                          # json | json-full | a template over TEMPLATE_FIELDS
    line_end: Literal["lf", "crlf"] = "lf"
    queue_size: int = Field(100, ge=1, le=100_000)
    write_timeout_s: float = Field(1.0, gt=0, le=60)
    retry_initial_s: float = Field(0.5, gt=0, le=60)
    retry_max_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("format")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        if value in ("json", "json-full"):
            return value
        for _text, name, _spec, _conversion in string.Formatter().parse(value):
            # Plain names only: `{x.attr}` or `{x[0]}` would reach into objects.
            if name is not None and name not in TEMPLATE_FIELDS:
                raise ValueError(f"template field '{{{name}}}' is not one of: {', '.join(TEMPLATE_FIELDS)}")
        try:
            value.format_map(_SAMPLE)
        except (ValueError, TypeError) as err:
            raise ValueError(f"template cannot be filled: {err}") from None
        return value


def summary(message: dict[str, Any]) -> dict[str, Any]:
    """The compact fields of a result message (or of any contract message: absent ones left out)."""
    out = {key: message[key] for key in ("id", "seq", "ts", "device", "pipeline", "source") if key in message}
    items = message.get("results")
    if isinstance(items, list):
        labels = [str(item.get("label", item.get("text", ""))) for item in items if isinstance(item, dict)]
        scored = [item for item in items if isinstance(item, dict) and isinstance(item.get("score"), (int, float))]
        best = max(scored, key=lambda item: item["score"], default=None)
        out.update(count=len(items), labels=list(dict.fromkeys(labels)),
                   top=str(best.get("label", best.get("text", ""))) if best else "",
                   score=best["score"] if best else 0.0)
    return out


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def format_line(message: dict[str, Any], fmt: str) -> str:
    if fmt == "json-full":
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    fields = summary(message)
    if fmt == "json":
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if "labels" in fields:
        fields["labels"] = ",".join(fields["labels"])
    # A newline inside a label would split one result over two lines on the device.
    return fmt.format_map(_Blank(fields)).replace("\r", " ").replace("\n", " ")


class SerialSink:
    """Non-blocking writer of result lines to a serial port (see the module docstring)."""

    def __init__(self, config: SerialSinkConfig):
        self.config = config
        self.sent = 0              # lines written to the port
        self.dropped = 0           # lines dropped because the queue was full (oldest first) or at close
        self.failed = 0            # messages that could not be formatted
        self.outages = 0           # times the port failed or disappeared
        self.connected = False
        self.backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self._end = b"\r\n" if config.line_end == "crlf" else b"\n"
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"serial sink {config.port}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def write(self, message: dict[str, Any]) -> None:
        """Queue one message as a line; never blocks on the port."""
        try:
            line = format_line(message, self.config.format).encode("utf-8") + self._end
        except (ValueError, TypeError, KeyError) as err:
            self.failed += 1
            log.warning("serial sink %s: cannot format message seq=%s: %s", self.config.port, message.get("seq"), err)
            return
        with self._cond:
            if self._stopped:
                self.dropped += 1
                return
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(line)
            self._cond.notify_all()

    def close(self, timeout: float = 1.0) -> None:
        """Give the queue up to `timeout` seconds to reach the port, then stop; what is left is dropped."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue, timeout)
            self._stopped = True
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=self.config.write_timeout_s + 1)

    def _next_line(self) -> bytes | None:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopped)
            return None if self._stopped else self._queue[0]

    def _run(self) -> None:
        port: serial.Serial | None = None
        while (line := self._next_line()) is not None:
            if port is None:
                port = self._open()
            if port is None:
                with self._cond:    # an interruptible wait: close() must not sit out a long backoff
                    self._cond.wait_for(lambda: self._stopped, self.backoff.next_delay())
                continue
            try:
                port.write(line)
            except (serial.SerialException, OSError) as err:
                self.outages += 1
                log.warning("serial sink %s lost (%s); reopening with backoff up to %g s",
                            self.config.port, err, self.backoff.cap)
                port.close()
                port, self.connected = None, False
                continue
            with self._cond:
                # The line leaves the queue only once written. If write() dropped it as the oldest
                # meanwhile, it did reach the device after all: not a drop.
                if self._queue and self._queue[0] is line:
                    self._queue.popleft()
                else:
                    self.dropped -= 1
                self.sent += 1
                self._cond.notify_all()
        if port is not None:
            port.close()
        self.connected = False

    def _open(self) -> serial.Serial | None:
        try:
            port = serial.Serial(self.config.port, self.config.baud, write_timeout=self.config.write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as err:
            if not self.backoff.failures:
                log.warning("serial sink %s cannot be opened (%s); retrying with backoff up to %g s",
                            self.config.port, err, self.backoff.cap)
            return None
        if self.backoff.failures:
            log.info("serial sink %s is back after %d attempt(s)", self.config.port, self.backoff.failures)
        self.backoff.reset()
        self.connected = True
        with self._cond:
            self._cond.notify_all()
        return port
