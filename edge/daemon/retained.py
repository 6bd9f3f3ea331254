"""The daemon's retained present, from its main thread: Home Assistant discovery configs, each
pipeline's state (`pipeline_state.py`) and annotated frame (`ha_image.py`), and empty payloads on
the retained topics it published before and no longer has (`ha_cleanup.py`).

Everything goes out through `MqttPublisher.announce`: retained, QoS 1, and sent again on every
reconnect, so after a broker outage the broker holds the present again, not the last value it saw.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes.errors import EdgeError

from . import contract, ha_discovery
from .ha_cleanup import CLEAR_DATA_AFTER_S, RetainedTopics, retained_topics
from .mqtt import MqttPublisher
from .pipeline_state import StateFile

if TYPE_CHECKING:
    from .worker import PipelineWorker

log = logging.getLogger("edge.daemon")


class RetainedPresent:
    def __init__(self, publisher: MqttPublisher, device: str, workers: dict[str, "PipelineWorker"],
                 ha_discovery: bool, state_dir: Path | None):
        """`state_dir` None: nothing is kept across restarts (no state folder in use)."""
        self.publisher, self.device, self.workers, self.ha = publisher, device, workers, ha_discovery
        self.record = RetainedTopics(state_dir)
        self.state_file = StateFile(state_dir) if state_dir is not None else None
        self._data_to_clear: list[str] = []       # stale state and image topics, cleared after the configs
        self._connected_at: float | None = None
        self._data_since = 0.0
        saved = self.state_file.load() if self.state_file else {}
        for name, worker in workers.items():
            worker.state.restore(saved.get(name))

    def announce(self) -> None:
        """Discovery configs and every known state now (at start, and when pause, threshold or a
        reload changed them); clears what is no longer published."""
        entries = [ha_discovery.pipeline_entry(w.config, w.bundle.manifest.task) for w in self.workers.values()]
        discovery = ha_discovery.discovery_messages(self.device, entries, contract.status_topic(self.device)) \
            if self.ha else None
        for topic, payload, retain in discovery or ():
            self.publisher.announce(topic, payload, retain)
        self.publish_changes(every_state=True)
        stale = self.record.update(retained_topics(self.device, entries, discovery))
        if stale:
            log.info("clearing %d retained topic(s) this daemon no longer publishes: %s", len(stale),
                     ", ".join(stale[:5]) + (", ..." if len(stale) > 5 else ""))
        # Configs now; the data topics of those entities CLEAR_DATA_AFTER_S after connecting, once Home
        # Assistant has removed the entities (an entity still there would read the empty payload).
        self._clear([t for t in stale if t.startswith(f"{ha_discovery.PREFIX}/")])
        data = [t for t in stale if not t.startswith(f"{ha_discovery.PREFIX}/")]
        if data:
            self._data_to_clear += data
            self._data_since = time.monotonic()

    def _clear(self, topics: list[str]) -> None:
        for topic in topics:
            try:
                self.publisher.announce(topic, b"", retain=True)
            except EdgeError:       # another device id's topics (the device was renamed): not ours to touch
                log.warning("cannot clear %s: outside this device's topics (edge run --ha-cleanup with the "
                            "old device id clears it)", topic)

    def publish_changes(self, every_state: bool = False, final: bool = False) -> None:
        """Changed states and new frames (each main-loop turn); `final` also writes the state file now."""
        for name, worker in self.workers.items():
            state = worker.state
            if state.changed() or (every_state and state.known):
                message = state.message(self.device, worker.paused, worker.threshold)
                self.publisher.announce(contract.state_topic(self.device, name), contract.encode_message(message))
            jpeg = worker.images.take() if worker.images is not None else None
            if jpeg is not None:
                self.publisher.announce(contract.image_topic(self.device, name), jpeg)
        if self.state_file is not None:
            self.state_file.save({name: w.state.saved() for name, w in self.workers.items() if w.state.known},
                                 force=final)
        if not self.publisher.connected:
            self._connected_at = None
            return
        if self._connected_at is None:
            self._connected_at = time.monotonic()
            if not self._data_to_clear:
                self.record.confirm()       # the empty payloads went out on connecting
        if self._data_to_clear and \
                time.monotonic() - max(self._connected_at, self._data_since) >= CLEAR_DATA_AFTER_S:
            self._clear(self._data_to_clear)
            log.info("cleared the retained state of %d topic(s) whose entities are gone", len(self._data_to_clear))
            self._data_to_clear = []
            self.record.confirm()
