"""The on-device daemon (`edge run`): source -> task pipeline -> MQTT, until SIGTERM or SIGINT.

Lifecycle: open the source, the bundle and its task (so `online` means ready to work), connect in
the background, then take frames one at a time. A frame that cannot be decoded or run becomes a
message on the errors topic and the daemon goes on. On the first SIGTERM/SIGINT it takes no new
frames, waits (bounded) for the broker to acknowledge what was published, says `offline` and
exits 0; a second signal cuts that wait short.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runtimes.bundle import Bundle
from runtimes.errors import ConfigError, EdgeError
from runtimes.tasks import load_task

from . import contract
from .mqtt import MqttPublisher, parse_mqtt_url
from .sources import Frame, open_source

log = logging.getLogger("edge.daemon")


class DaemonOptions(BaseModel):
    """What `edge run` needs. Build it with `DaemonOptions.build(...)` to get ConfigError, not pydantic's."""

    model_config = ConfigDict(extra="forbid")

    bundle: Path
    source: str                                      # a folder now; camera/stream specs later
    mqtt_url: str                                    # mqtt://HOST:PORT
    device_id: str
    pipeline: str | None = None                      # None: the bundle manifest's `pipeline`
    qos: Literal[0, 1, 2] = 1
    poll_interval: float = Field(0.5, gt=0, le=60)   # seconds between looks at an idle source
    drain_timeout: float = Field(10.0, ge=0)         # seconds to wait for acks when stopping
    max_pending: int = Field(1000, ge=1)             # unacknowledged messages before the source pauses

    @field_validator("mqtt_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str) -> str:
        return contract.check_topic_segment(value, "device_id")

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, value: str | None) -> str | None:
        return value if value is None else contract.check_topic_segment(value, "pipeline")

    @classmethod
    def build(cls, **values: Any) -> "DaemonOptions":
        try:
            return cls(**values)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigError(first["msg"], field=field) from None


class Daemon:
    """One pipeline on one device: owns the source, the task and the publisher."""

    def __init__(self, options: DaemonOptions):
        self.options = options
        self.source = open_source(options.source, options.poll_interval)
        bundle = Bundle.open(options.bundle)
        self.pipeline = contract.check_topic_segment(options.pipeline or bundle.manifest.pipeline, "pipeline")
        self.task = load_task(bundle)
        self.device = options.device_id
        self.results_topic = contract.results_topic(self.device, self.pipeline)
        self.errors_topic = contract.errors_topic(self.device, self.pipeline)
        self.publisher = MqttPublisher(options.mqtt_url, f"edge-{self.device}-{self.pipeline}", self.device)
        self.seq = 0                      # per pipeline: every input taken, result or error
        self.counts = {"results": 0, "errors": 0}
        log.info("pipeline '%s' (%s: %s) ready, reading %s", self.pipeline, bundle.manifest.task,
                 ", ".join(self.task.models), options.source)

    def serve(self, stop: threading.Event) -> None:
        self.publisher.start()
        paused = False
        while not stop.is_set():
            self.publisher.pump()
            if len(self.publisher.outbox) >= self.options.max_pending:
                if not paused:
                    log.warning("%d messages unacknowledged; pausing the source until the broker catches up",
                                len(self.publisher.outbox))
                paused = True
                stop.wait(self.options.poll_interval)
                continue
            if paused:
                log.info("broker caught up; resuming the source")
                paused = False
            frame = self.source.next_frame()
            if frame is None:
                stop.wait(self.options.poll_interval)
            else:
                self.process(frame)

    def process(self, frame: Frame) -> None:
        self.seq += 1
        try:
            output = self.task(frame.load())
            message = contract.result_message(
                device=self.device, pipeline=self.pipeline, models=self.task.models, source=frame.source,
                seq=self.seq, latency_ms=output.timings.as_dict(), results=output.results)
            payload = contract.encode_message(message)
        except EdgeError as err:
            self.publish_error(frame.source, str(err))
            return
        except Exception as err:   # a bug on one input must not take the device down
            log.exception("seq=%d %s: unexpected failure", self.seq, frame.source)
            self.publish_error(frame.source, f"internal error: {type(err).__name__}: {err}")
            return
        self.publisher.publish(self.results_topic, payload, qos=self.options.qos)
        self.counts["results"] += 1
        total = sum(message["latency_ms"].values())
        log.info("result seq=%d %s: %d item(s) in %.0f ms%s", self.seq, frame.source,
                 len(output.results), total, self._delivery_note())

    def publish_error(self, source: str, error: str) -> None:
        message = contract.error_message(device=self.device, pipeline=self.pipeline, source=source,
                                         error=error, seq=self.seq)
        self.publisher.publish(self.errors_topic, contract.encode_message(message), qos=self.options.qos)
        self.counts["errors"] += 1
        log.warning("error seq=%d %s%s", self.seq, message["error"], self._delivery_note())

    def _delivery_note(self) -> str:
        if self.publisher.connected:
            return ""
        return f" (broker away: queued, {len(self.publisher.outbox)} waiting)"

    def shutdown(self, abort: threading.Event) -> None:
        waiting = len(self.publisher.outbox)
        if waiting:
            log.info("waiting up to %.0f s for the broker to acknowledge %d message(s)",
                     self.options.drain_timeout, waiting)
        left = self.publisher.drain(self.options.drain_timeout, cancel=abort)
        self.publisher.stop()
        self.source.close()
        if left:
            log.warning("%d message(s) were never acknowledged by the broker and are lost", left)
        log.info("stopped: %d result(s), %d error(s)", self.counts["results"], self.counts["errors"])


class StopSignals:
    """First SIGTERM/SIGINT asks for a clean stop; a second one also cuts the wait for acks short."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop, self.abort = stop or threading.Event(), threading.Event()
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        # Only flags here: the main thread logs, since a handler may interrupt a log call.
        self.received.append(signal.Signals(signum).name)
        (self.abort if self.stop.is_set() else self.stop).set()

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def setup_logging(verbose: bool = False) -> None:
    """One line per event on stderr, unless the caller (the CLI) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_daemon(options: DaemonOptions, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); 0 after a clean stop. Startup problems raise EdgeError."""
    setup_logging()
    with StopSignals(stop) as signals:
        daemon = Daemon(options)
        started = time.monotonic()
        daemon.serve(signals.stop)
        log.info("stopping on %s after %.0f s", ", ".join(signals.received) or "request",
                 time.monotonic() - started)
        daemon.shutdown(signals.abort)
    return 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `edge run` (shared by the CLI and `python -m edge.daemon`)."""
    parser.add_argument("bundle", type=Path, help="bundle folder (made by 'edge convert')")
    parser.add_argument("--source", required=True, help="folder to watch for images")
    parser.add_argument("--mqtt", required=True, dest="mqtt_url", help="broker, mqtt://HOST:PORT")
    parser.add_argument("--device-id", required=True, help="this device's name in topics")
    parser.add_argument("--pipeline", help="pipeline name in topics (default: the bundle's)")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="MQTT QoS (default 1)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between folder scans")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds to wait for the broker's acks when stopping")


def options_from_args(args: argparse.Namespace) -> DaemonOptions:
    return DaemonOptions.build(bundle=args.bundle, source=args.source, mqtt_url=args.mqtt_url,
                               device_id=args.device_id, pipeline=args.pipeline, qos=args.qos,
                               poll_interval=args.poll_interval, drain_timeout=args.drain_timeout)
