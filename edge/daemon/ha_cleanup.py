"""Retained topics the daemon no longer has: cleared on start, and all of them by `edge run --ha-cleanup`.

Retained messages outlive their publisher: a renamed pipeline or rule would leave its Home
Assistant discovery configs (and its retained state and image) on the broker, and Home Assistant
would keep orphan entities showing stale values (and render their templates against messages
without their keys). So the daemon records in its state folder every retained topic it publishes
(`retained_topics.json`) and, when it starts (or a reload changes its entities), publishes an
empty retained payload on each recorded topic it no longer has, which deletes the retained
message and the Home Assistant entity. The record keeps those topics until the daemon has been
connected (the empty payloads went out), so a daemon stopped before connecting tries again.

`edge run CONFIG --ha-cleanup` (with the daemon stopped: it connects as the same MQTT client)
removes everything: what the record lists, what the configuration would publish, and every
discovery config of this device the broker still holds (found by subscribing to them).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from runtimes.errors import EdgeError

from runtimes.bundle import Bundle

from . import contract, ha_discovery
from .mqtt import _set_tls, parse_mqtt_url

if TYPE_CHECKING:
    from .config import DaemonConfig

log = logging.getLogger("edge.daemon")

RECORD_FILE = "retained_topics.json"
SCAN_QUIET_S = 0.5             # retained messages arrive right after the subscription; then silence
SCAN_MAX_S = 5.0
# Empty payloads on entities' data topics wait this long after their configs' (an entity Home Assistant
# has not removed yet would read the empty payload as a state and log it).
CLEAR_DATA_AFTER_S = 3.0


class RetainedTopics:
    """The record of retained topics published from this state folder."""

    def __init__(self, state_dir: Path | None):
        self.path = Path(state_dir) / RECORD_FILE if state_dir is not None else None
        self._recorded = self._load()
        self._current: set[str] = set()

    def _load(self) -> set[str]:
        if self.path is None:
            return set()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as err:
            log.warning("ignoring %s (%s): topics published before cannot be cleared", self.path, err)
            return set()
        return {t for t in data.get("topics", []) if isinstance(t, str)} if isinstance(data, dict) else set()

    def update(self, current: set[str]) -> list[str]:
        """The daemon publishes `current` now: the recorded topics it no longer has (to clear)."""
        stale = sorted(self._recorded - current)
        self._current = set(current)
        self._recorded = self._current | set(stale)
        self._save(self._recorded)
        return stale

    def confirm(self) -> None:
        """The empty payloads went out (the daemon connected): forget the cleared topics."""
        if self._recorded != self._current:
            self._recorded = set(self._current)
            self._save(self._recorded)

    @property
    def recorded(self) -> set[str]:
        return set(self._recorded)

    def _save(self, topics: set[str]) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"topics": sorted(topics)}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def cleanup(config: "DaemonConfig", current: set[str], timeout: float = 30.0) -> list[str]:
    """Clear every retained topic of this device that `--ha-cleanup` covers; the topics cleared."""
    record = RetainedTopics(config.state_dir if config.state_dir.is_dir() else None)
    client = _client(config)
    found: set[str] = set()
    subscribed = threading.Event()

    def on_message(_client, _userdata, message: paho.MQTTMessage) -> None:
        if message.retain and message.payload:
            found.add(message.topic)
            last_seen[0] = time.monotonic()

    last_seen = [time.monotonic()]
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    address = parse_mqtt_url(config.broker.url)
    try:
        client.connect(address.host, address.port, keepalive=config.broker.keepalive)
    except OSError as err:
        raise EdgeError(f"cannot reach the broker {address.host}:{address.port}: {err}") from None
    client.loop_start()
    try:
        client.subscribe(ha_discovery.config_topic_filter(config.device_id), qos=1)
        if not subscribed.wait(timeout):
            raise EdgeError(f"the broker {address.host}:{address.port} did not answer within {timeout:.0f} s")
        _wait_quiet(last_seen)
        topics = sorted(found | current | record.recorded)
        configs = [t for t in topics if t.startswith(f"{ha_discovery.PREFIX}/")]
        data = [t for t in topics if t not in configs]
        _clear(client, configs, timeout)
        if configs and data:
            time.sleep(CLEAR_DATA_AFTER_S)     # Home Assistant removes the entities before their data goes
        _clear(client, data, timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    if record.path is not None:
        record.update(set())
        record.confirm()
    return topics


def _clear(client: paho.Client, topics: list[str], timeout: float) -> None:
    for info in [client.publish(topic, b"", qos=1, retain=True) for topic in topics]:
        info.wait_for_publish(timeout)


def _wait_quiet(last_seen: list[float]) -> None:
    started = time.monotonic()
    while time.monotonic() - last_seen[0] < SCAN_QUIET_S and time.monotonic() - started < SCAN_MAX_S:
        time.sleep(0.05)


def _client(config: "DaemonConfig") -> paho.Client:
    broker = config.broker
    protocol = paho.MQTTv5 if broker.protocol == "5" else paho.MQTTv311
    session = {} if protocol == paho.MQTTv5 else {"clean_session": True}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.device_id, protocol=protocol, **session)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password_value())
    if parse_mqtt_url(broker.url).scheme == "mqtts":
        _set_tls(client, broker)
    return client


def retained_topics(device: str, entries: list[dict], discovery: list[ha_discovery.Message] | None) -> set[str]:
    """Every retained topic the daemon publishes: each pipeline's state, and with Home Assistant
    discovery on (`discovery` not None) the configs and each pipeline's image."""
    topics = {topic for topic, _payload, _retain in discovery or ()}
    for entry in entries:
        topics.add(contract.state_topic(device, entry["name"]))
        if discovery is not None and entry.get("image"):
            topics.add(contract.image_topic(device, entry["name"]))
    return topics


def configured_topics(config: "DaemonConfig") -> set[str]:
    """What the configuration would publish retained (bundles are read, not loaded)."""
    entries = [ha_discovery.pipeline_entry(p, Bundle.open(p.bundle, verify=False).manifest.task)
               for p in config.pipelines]
    discovery = ha_discovery.discovery_messages(config.device_id, entries, contract.status_topic(config.device_id)) \
        if config.ha_discovery else None
    return retained_topics(config.device_id, entries, discovery)


def cleanup_command(config: "DaemonConfig") -> int:
    """`edge run ... --ha-cleanup`: clear, print what, exit 0."""
    cleared = cleanup(config, configured_topics(config))
    entities = sum(1 for topic in cleared if topic.startswith(f"{ha_discovery.PREFIX}/"))
    print(f"{config.device_id}: cleared {len(cleared)} retained topic(s), {entities} Home Assistant entit"
          f"{'y' if entities == 1 else 'ies'}")
    return 0
