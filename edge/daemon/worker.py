"""One pipeline of the daemon, in a thread of its own: source -> task -> threshold -> rules -> spool.

Each input's messages (its result and the events it caused, or its error) go into the spool in one
transaction together with the ledger record that the input was processed, so a crash at any point
leaves either all of them or none. Inputs the ledger already knows (processed before a restart)
are skipped without being read.

The main thread steers a worker through `pause`, `resume`, `set_threshold`, `reload` and
`snapshot`; all other state is the worker's own.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from runtimes.bundle import Bundle
from runtimes.errors import EdgeError
from runtimes.tasks import Task, load_task

from ..device.context import describe_choice, device_context
from . import contract
from .config import PipelineConfig
from .ha_image import FrameImages
from .inflight import InFlight, Outcome
from .ledger import Ledger
from .metrics import MetricsCollector
from .mqtt import MqttPublisher
from .pipeline_state import PipelineState
from .rules import RuleEngine
from .sources import Frame, Source, open_source

log = logging.getLogger("edge.daemon")

Sink = Callable[[dict[str, Any]], None]      # gets every result message; must not block


class PipelineWorker:
    def __init__(self, config: PipelineConfig, device: str, publisher: MqttPublisher, ledger: Ledger | None,
                 metrics: MetricsCollector, sinks: list[Sink], stop: threading.Event, state_dir: Path | None = None,
                 ha_images: bool = False):
        self.config, self.device, self.publisher, self.ledger = config, device, publisher, ledger
        self.metrics, self.sinks, self.stop = metrics, sinks, stop
        self.state_dir = state_dir
        self.name: str = config.name or ""
        self.bundle, self.task = _load(config.bundle, state_dir)
        self.source: Source = open_source(config.source, config.poll_interval)
        self.threshold = config.threshold
        self.rules = RuleEngine(config.rules)
        # what the pipeline shows now (retained state), and its annotated frames for Home Assistant
        self.state = PipelineState(self.name, self.bundle.manifest.task, [rule.name for rule in self.rules.rules])
        ha = config.home_assistant
        self.images = FrameImages(self.bundle.manifest.task, ha.image_interval, ha.image_width) \
            if ha_images and ha.image_interval > 0 else None
        self.paused = False
        # inputs taken, results and errors alike; carried on across restarts by the ledger
        self.seq = ledger.last_seq(self.name) if ledger is not None else 0
        self.counts = {"results": 0, "errors": 0, "skipped": 0}
        self.failure: str | None = None  # set if the worker's loop died
        self._last_image: np.ndarray | None = None
        self._swap = threading.Lock()    # (bundle, task) change together on a reload
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}", daemon=True)
        self._in_flight = InFlight(config.in_flight, f"pipeline-{self.name}")
        self._results_topic = contract.results_topic(device, self.name)
        self._errors_topic = contract.errors_topic(device, self.name)
        self._events_topic = contract.events_topic(device, self.name)
        log.info("pipeline '%s' (%s: %s) ready, reading %s%s", self.name, self.bundle.manifest.task,
                 ", ".join(self.task.models), self.source.kind,
                 f", {self.in_flight} frames in flight" if self.in_flight > 1 else "")

    # --- the worker's thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
            self._in_flight.close()     # frames taken are finished: their inputs are not read again
        except Exception as err:        # a dead pipeline must not look alive: the daemon exits non-zero
            log.exception("pipeline '%s' stopped on an unexpected failure", self.name)
            self.failure = f"{type(err).__name__}: {err}"
        finally:
            self.source.close()

    def _loop(self) -> None:
        wait = self.config.poll_interval
        min_gap = 1.0 / self.config.rate_limit if self.config.rate_limit else 0.0
        next_take, waiting_for_spool, said_finished = 0.0, False, False
        while not self.stop.is_set():
            self._publish_source_changes()
            # Frames a live source replaces while the pipeline chooses not to take any are skipped, not dropped.
            self.source.hold(self.paused or bool(min_gap and time.monotonic() < next_take))
            if self.paused:
                self._in_flight.drain()
                self.stop.wait(wait)
                continue
            # Files can wait where they are; a full spool would otherwise push out older results.
            if not self.source.live and self.publisher.outbox.full:
                if not waiting_for_spool:
                    log.warning("pipeline '%s': spool full; leaving inputs unread until the broker catches up",
                                self.name)
                waiting_for_spool = True
                self.stop.wait(wait)
                continue
            waiting_for_spool = False
            if min_gap and time.monotonic() < next_take:
                self.stop.wait(next_take - time.monotonic())
                continue
            frame = self.source.next_frame()
            if frame is None:
                self._in_flight.drain()
                if self.source.finished and not said_finished:
                    log.info("pipeline '%s': source finished (%d result(s), %d error(s))", self.name,
                             self.counts["results"], self.counts["errors"])
                    said_finished = True
                self.source.wait_ready(wait, self.stop)    # a live source wakes it with its next frame
                continue
            next_take = time.monotonic() + min_gap
            self.process(frame)

    def _publish_source_changes(self) -> None:
        """A camera's or stream's connection changes (lost, reconnected, ...) go out on the events topic,
        kept in a full spool like errors: they are rare, and they explain a gap in the results."""
        for change in self.source.take_changes():
            problem = change.problem
            body = contract.source_message(
                device=self.device, pipeline=self.name, source=getattr(self.source, "name", self.source.kind),
                change=change.change, connected=change.connected, reconnects=change.reconnects,
                problem=problem and problem.code, reason=problem and problem.reason,
                config_error=bool(problem and problem.config_error), retry_s=change.retry_s, down_s=change.down_s,
                ts=contract.utc_timestamp(datetime.fromtimestamp(change.ts, timezone.utc)))
            self.publisher.publish_all([(self._events_topic, contract.encode_message(body), self.config.qos, "error")])

    @property
    def finished(self) -> bool:
        return self.source.finished

    @property
    def in_flight(self) -> int:
        """Frames this pipeline runs at once: the config's `in_flight` where every backend of the task takes
        concurrent calls (not Paddle Lite's worker process), else 1."""
        with self._swap:
            return self.config.in_flight if self.task.concurrent else 1

    def process(self, frame: Frame) -> None:
        key = frame.key if self.ledger is not None else None
        if key is not None and self.ledger.done(self.name, key):
            if not self.counts["skipped"]:      # a folder of 100k old files must not mean 100k log lines
                log.info("pipeline '%s': skipping inputs the ledger says were processed before", self.name)
            self.counts["skipped"] += 1
            log.debug("skipped %s: processed before", frame.source)
            return
        self.seq += 1
        seq = self.seq
        self._in_flight.submit(lambda: self._infer(frame), lambda outcome: self._finish(frame, key, seq, outcome),
                               self.in_flight)

    def _infer(self, frame: Frame) -> tuple[np.ndarray, Task, Any]:
        """Decode and run one frame (on a thread of the in-flight pool when several frames are in flight)."""
        image = frame.load()
        with self._swap:
            task = self.task             # a reload swaps it between frames, never inside one
        return image, task, task(image)

    def _finish(self, frame: Frame, key: Any, seq: int, outcome: Outcome) -> None:
        """Publish one frame's result or error, in the order frames were taken, on the pipeline's thread."""
        result, error = None, None
        try:
            if outcome.error is not None:
                raise outcome.error
            image, task, output = outcome.value
            self._last_image = image
            messages, result = self._result_messages(frame, image, task, output, seq)
        except EdgeError as err:
            error = str(err)
        except Exception as err:        # a bug on one input must not take the device down
            log.exception("seq=%d %s: unexpected failure", seq, frame.source)
            error = f"internal error: {type(err).__name__}: {err}"
        if error is not None:
            message = contract.error_message(device=self.device, pipeline=self.name, source=frame.source,
                                             error=error, seq=seq)
            messages = [(self._errors_topic, contract.encode_message(message), self.config.qos, "error")]
        also = self.ledger.marker(self.name, key, seq=seq) if self.ledger is not None else None
        self.publisher.publish_all(messages, also=also)
        if result is None:
            self.state.record_error(message)
            self.counts["errors"] += 1
            self.metrics.count("errors", pipeline=self.name)
            log.warning("error seq=%d %s%s", seq, message["error"], self._delivery_note())
            return
        self.state.record_result(result, self.rules.states())
        if self.images is not None:
            self.images.offer(image, result["results"])
        self.counts["results"] += 1
        self.metrics.record(result["latency_ms"], pipeline=self.name)
        for sink in self.sinks:
            sink(result)
        log.info("result seq=%d %s: %d item(s) in %.0f ms%s", seq, frame.source, len(result["results"]),
                 sum(result["latency_ms"].values()), self._delivery_note())

    def _result_messages(self, frame: Frame, image: np.ndarray, task: Task, output: Any,
                         seq: int) -> tuple[list[tuple[str, bytes, int, str]], dict[str, Any]]:
        threshold = self.threshold
        results = output.results if threshold is None else [
            item for item in output.results if not isinstance(item.get("score"), (int, float))
            or item["score"] >= threshold]
        result = contract.result_message(device=self.device, pipeline=self.name, models=task.models,
                                         source=frame.source, seq=seq, latency_ms=output.timings.as_dict(),
                                         results=results)
        qos = self.config.qos
        messages = [(self._results_topic, contract.encode_message(result), qos, "result")]
        height, width = image.shape[:2]
        for event in self.rules.update(results, result["ts"], image_size=(width, height)):
            body = contract.event_message(device=self.device, pipeline=self.name, event=event, seq=seq,
                                          source=frame.source)
            messages.append((self._events_topic, contract.encode_message(body), qos, "event"))
            log.info("event %s: rule '%s' %s", self.name, event["rule"], event["change"])
        return messages, result

    def _delivery_note(self) -> str:
        if self.publisher.connected:
            return ""
        return f" (broker away: queued, {len(self.publisher.outbox)} waiting)"

    # --- called from the main thread (commands) ------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        self.threshold = value

    def reload(self, bundle_path: str | None) -> None:
        """Open the bundle again (or another one) and swap it in between two frames; the old one stays on failure."""
        bundle, task = _load(bundle_path or self.bundle.root, self.state_dir)
        with self._swap:
            self.bundle, self.task = bundle, task
        self.state.set_task(bundle.manifest.task)
        if self.images is not None:
            self.images.task = bundle.manifest.task
        log.info("pipeline '%s' now runs %s (%s)", self.name, bundle.root, ", ".join(task.models))

    def snapshot(self) -> np.ndarray | None:
        """What the source sees now (live sources), else the last image processed; None before any."""
        latest = getattr(self.source, "latest", None)
        frame = latest() if callable(latest) else None
        if frame is not None:
            try:
                return frame.load()
            except EdgeError:
                pass
        return self._last_image

    def describe(self) -> dict[str, Any]:
        """This pipeline's entry in the status description."""
        return {"name": self.name, "task": self.bundle.manifest.task, "bundle": self.bundle.root.name,
                "models": list(self.task.models), "source": self.source.kind,
                **({"connection": self.source.connection} if self.source.connection is not None else {}),
                "paused": self.paused,
                "threshold": self.threshold, "rules": [rule.name for rule in self.rules.rules],
                "runs": self.model_runs(), "chosen": describe_choice(self.task.context)}

    def model_runs(self) -> list[dict[str, Any]]:
        """Per model: the artifact this device opened and what really runs it (for status/info and metrics)."""
        with self._swap:
            task = self.task
        return model_runs(task)


def model_runs(task: Task) -> list[dict[str, Any]]:
    """`providers` is the backend's own report after loading (onnxruntime: `session.get_providers()`), not the
    bundle's wish list: a TensorRT-first bundle on an onnxruntime without TensorRT says CPUExecutionProvider."""
    return [{"role": role, "artifact": runner.artifact.path, "precision": runner.artifact.precision,
             "providers": list(runner.backend.providers_in_use or [runner.artifact.backend])}
            for role, runner in task.runners().items()]


def _load(path: Any, state_dir: Path | None) -> tuple[Bundle, Task]:
    bundle = Bundle.open(path)
    return bundle, load_task(bundle, device_context(bundle, state_dir))


def save_snapshot(image: np.ndarray, folder: Any, name: str) -> str:
    """Write `image` as JPEG under `folder` (the daemon's own); the file's name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{int(time.time() * 1000) % 1000:03d}.jpg"
    if not cv2.imwrite(str(path), image):
        raise EdgeError(f"could not write the snapshot {path}")
    return path.name
