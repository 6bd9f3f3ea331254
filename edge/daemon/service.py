"""The on-device daemon (`edge run`): pipelines -> spool -> MQTT, until SIGTERM or SIGINT.

Lifecycle: open the state folder (spool and ledger), every pipeline's source, bundle and task (so
`online` means ready to work), connect in the background, start one thread per pipeline, tell
systemd we are ready. The main thread then drives the MQTT client (acks, replays, commands),
publishes metrics every `metrics_interval` seconds and pings the systemd watchdog. On the first
SIGTERM/SIGINT the pipelines take no new input, the daemon waits (bounded) for the broker to
acknowledge what is spooled, says `offline` and exits 0; a second signal cuts that wait short.
What was not acknowledged stays in the spool for the next start. A pipeline that dies makes the
daemon exit 1, so a service manager restarts it.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

from runtimes import __version__
from runtimes.errors import EdgeError

from ..ota import agent as ota
from . import contract, ha_discovery, watchdog
from .commands import CommandError, CommandRouter
from .config import DaemonConfig
from .ledger import Ledger
from .metrics import MetricsCollector
from .mqtt import MqttPublisher, Outbox
from .retained import RetainedPresent
from .serial_sink import SerialSink
from .spool import Spool, StateDb
from .worker import PipelineWorker, save_snapshot

log = logging.getLogger("edge.daemon")

WORKER_JOIN_S = 30.0            # a frame in progress when stopping may take this long to finish


class Daemon:
    """One device: its pipelines, the spool and ledger, one MQTT client, metrics and commands.

    `outbox` replaces the spool (and turns the ledger off): for measuring what the spool costs."""

    def __init__(self, config: DaemonConfig, outbox: Outbox | None = None):
        self.config, self.device = config, config.device_id
        self.stop_event = threading.Event()
        self.db: StateDb | None = None
        self.ledger: Ledger | None = None
        self.sinks: list[SerialSink] = []
        self.workers: dict[str, PipelineWorker] = {}
        self.ota: ota.OtaAgent | None = None
        if config.ota is not None:
            ota.recover(config)         # an update a power cut interrupted: undone before any bundle opens
        try:
            self._open(outbox)
        except BaseException:
            self._release()         # nothing half-open stays behind (the state folder's lock above all)
            raise
        self.router = CommandRouter({"pause": self._pause, "resume": self._resume,
                                     "set_threshold": self._set_threshold, "snapshot": self._snapshot,
                                     "reload": self._reload}, config.bundles_dir)
        self.publisher.subscribe(contract.command_filter(self.device), self._command)
        if config.ota is not None:
            self.ota = ota.OtaAgent(config, self.publisher, self.workers, on_reload=self._announce)
            self.router.handlers["ota"] = self.ota.offer
        self.started, self._t0 = contract.utc_timestamp(), time.monotonic()
        self.retained = RetainedPresent(self.publisher, self.device, self.workers, config.ha_discovery,
                                        config.state_dir if self.db is not None else None)
        self._announce()
        self._seen_drops: dict[str, int] = {}
        self._seen_spool_drops = 0

    def _open(self, outbox: Outbox | None) -> None:
        config = self.config
        if outbox is None:
            self.db = StateDb(config.state_dir, config.spool.synchronous)
            outbox = Spool(self.db, config.spool.max_messages, int(config.spool.max_mb * 2**20))
            self.ledger = Ledger(self.db)
        self.outbox = outbox
        self.metrics = MetricsCollector()
        other_topics = (f"{ha_discovery.PREFIX}/",)     # with discovery off too: to clear configs of before
        self.publisher = MqttPublisher(config.broker, self.device, outbox, other_prefixes=other_topics)
        if config.sinks.serial is not None:
            self.sinks.append(SerialSink(config.sinks.serial))
        for pipeline in config.pipelines:
            worker = PipelineWorker(pipeline, self.device, self.publisher, self.ledger, self.metrics,
                                    [sink.write for sink in self.sinks], self.stop_event, config.state_dir,
                                    ha_images=config.ha_discovery)
            self.workers[worker.name] = worker
            self.metrics.add_pipeline(worker.name)

    def _announce(self) -> None:
        """The retained description, pipeline states and discovery configs: sent on every connect, and again
        on change."""
        self._announce_description()
        self.retained.announce()

    def _announce_description(self) -> None:
        self._connections = self._source_connections()
        pipelines = [worker.describe() for worker in self.workers.values()]
        profiles = sorted({w.bundle.manifest.provenance.profile for w in self.workers.values()})
        description = contract.status_description(self.device, __version__, ", ".join(profiles) or None,
                                                  pipelines, started=self.started)
        self.publisher.announce(contract.status_info_topic(self.device), contract.encode_message(description))

    def _source_connections(self) -> dict[str, Any]:
        return {name: worker.source.connection for name, worker in self.workers.items()}

    # --- running ------------------------------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Until `stop` is set, or every pipeline's source is finished, or a pipeline died."""
        self.publisher.start()
        for worker in self.workers.values():
            worker.start()
        watchdog.ready(f"{len(self.workers)} pipeline(s)")
        heartbeat = watchdog.Heartbeat()
        interval = self.config.metrics_interval
        next_metrics = time.monotonic() + interval
        while not stop.is_set():
            self.publisher.pump(timeout=0.05)
            if self.ota is not None:
                self.ota.tick()
            self.retained.publish_changes()
            if self._source_connections() != self._connections:    # a camera lost or back: status/info says so
                self._announce_description()
            heartbeat.beat()
            if interval and time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + interval
                self.publish_metrics()
            if self.failed or all(w.finished for w in self.workers.values()):
                break
        self.stop_event.set()

    @property
    def failed(self) -> list[str]:
        return [f"{w.name}: {w.failure}" for w in self.workers.values() if w.failure]

    def publish_metrics(self) -> None:
        for name, worker in self.workers.items():
            self.metrics.set_runs(name, worker.model_runs())     # current after a reload too
            self.metrics.set_connection(name, worker.source.connection)
            drops = worker.source.dropped
            if drops > self._seen_drops.get(name, 0):
                self.metrics.count("dropped_frames", drops - self._seen_drops.get(name, 0), pipeline=name)
                self._seen_drops[name] = drops
        if self.outbox.dropped > self._seen_spool_drops:
            self.metrics.count("spool_dropped", self.outbox.dropped - self._seen_spool_drops)
            self._seen_spool_drops = self.outbox.dropped
        extra = {"spool_depth": len(self.outbox), "unacked": self.publisher.inflight,
                 "connected": self.publisher.connected, "uptime_s": round(time.monotonic() - self._t0, 1)}
        if isinstance(self.outbox, Spool):
            extra["spool_capacity"] = self.outbox.max_messages
        message = contract.metrics_message(device=self.device, snapshot=self.metrics.snapshot(extra))
        # Retained: a fleet view (`edge fleet ls`) that subscribes later still sees the last fps and spool depth.
        self.publisher.send_now(contract.metrics_topic(self.device), contract.encode_message(message), qos=0,
                                retain=True)

    def shutdown(self, abort: threading.Event) -> int:
        """Stop the pipelines, wait (bounded) for acks, say offline; 0, or 1 if a pipeline had died."""
        watchdog.stopping()
        failed = self.failed
        self.stop_event.set()
        for worker in self.workers.values():
            if not worker.join(WORKER_JOIN_S):
                log.warning("pipeline '%s' did not finish its frame within %.0f s", worker.name, WORKER_JOIN_S)
        self.retained.publish_changes(final=True)      # the last frames' state, before the broker goes
        waiting = len(self.outbox)
        if waiting:
            log.info("waiting up to %.0f s for the broker to acknowledge %d message(s)",
                     self.config.drain_timeout, waiting)
        left = self.publisher.drain(self.config.drain_timeout, cancel=abort)
        self.publisher.stop()
        if left:
            kept = "kept in the spool for the next start" if self.db else "lost"
            log.warning("%d message(s) were never acknowledged by the broker and are %s", left, kept)
        self._release()
        totals = {k: sum(w.counts[k] for w in self.workers.values()) for k in ("results", "errors", "skipped")}
        log.info("stopped: %d result(s), %d error(s), %d input(s) skipped as processed before",
                 totals["results"], totals["errors"], totals["skipped"])
        for problem in failed:
            log.error("pipeline %s", problem)
        return 1 if failed else 0

    def _release(self) -> None:
        for sink in self.sinks:
            sink.close()
        for worker in self.workers.values():
            if not worker.alive:
                worker.source.close()
        if self.db is not None:
            self.db.close()

    # --- commands (main thread) -----------------------------------------------------------------------
    def _command(self, topic: str, payload: bytes) -> None:
        answer = self.router.handle_message(self.device, topic, payload)
        if answer is not None:
            reply_topic, reply = answer
            self.publisher.send_now(reply_topic, contract.encode_message(reply), qos=1)

    def _worker(self, name: str) -> PipelineWorker:
        if name not in self.workers:
            raise CommandError(f"no pipeline '{name}' on this device (it runs: {', '.join(self.workers)})")
        return self.workers[name]

    def _chosen(self, arguments: dict[str, Any]) -> list[PipelineWorker]:
        name = arguments.get("pipeline")
        return list(self.workers.values()) if name is None else [self._worker(name)]

    def _pause(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._set_paused(arguments, True)

    def _resume(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._set_paused(arguments, False)

    def _set_paused(self, arguments: dict[str, Any], paused: bool) -> dict[str, Any]:
        chosen = self._chosen(arguments)
        for worker in chosen:
            worker.paused = paused
            log.info("pipeline '%s' %s", worker.name, "paused" if paused else "resumed")
        self._announce()
        return {"pipelines": [w.name for w in chosen], "paused": paused}

    def _set_threshold(self, arguments: dict[str, Any]) -> dict[str, Any]:
        worker = self._worker(arguments["pipeline"])
        worker.set_threshold(arguments["value"])
        self._announce()
        return {"pipeline": worker.name, "threshold": worker.threshold}

    def _snapshot(self, arguments: dict[str, Any]) -> dict[str, Any]:
        worker = self._worker(arguments["pipeline"])
        image = worker.snapshot()
        if image is None:
            raise CommandError(f"pipeline '{worker.name}' has no frame yet")
        name = save_snapshot(image, self.config.state_dir / "snapshots", worker.name)
        height, width = image.shape[:2]
        return {"pipeline": worker.name, "file": name, "width": width, "height": height}

    def _reload(self, arguments: dict[str, Any]) -> dict[str, Any]:
        worker = self._worker(arguments["pipeline"])
        try:
            worker.reload(arguments.get("bundle_path"))
        except EdgeError as err:
            raise CommandError(f"reload failed, still running the previous bundle: {err}") from None
        self._announce()
        return {"pipeline": worker.name, "bundle": worker.bundle.root.name, "models": list(worker.task.models)}


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


def run_daemon(config: DaemonConfig, stop: threading.Event | None = None, outbox: Outbox | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set, or every source finished); 0 after a clean stop.

    Startup problems raise EdgeError."""
    setup_logging()
    with StopSignals(stop) as signals:
        daemon = Daemon(config, outbox)
        started = time.monotonic()
        daemon.serve(signals.stop)
        reason = ", ".join(signals.received) or ("a failed pipeline" if daemon.failed else
                                                 "sources finished" if not signals.stop.is_set() else "request")
        log.info("stopping on %s after %.0f s", reason, time.monotonic() - started)
        return daemon.shutdown(signals.abort)
