"""Publishing to an MQTT broker without losing messages while it is away.

Every message goes through an outbox that holds it until the broker acknowledges it (PUBACK).
`MemoryOutbox` keeps them in memory; a persistent spool (SQLite) can replace it later by offering
the same methods. paho's network thread only reports events (connected, lost, acknowledged) into a
queue; the daemon's own thread acts on them in `pump()`, so the outbox is touched by one thread only
and an acknowledgement can never arrive before its message id is recorded.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from runtimes.errors import ConfigError

from . import contract

log = logging.getLogger("edge.daemon.mqtt")

# scheme -> default port. mqtts:// (TLS) joins this table together with its certificate options.
SCHEMES = {"mqtt": 1883}
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
KEEPALIVE_S = 30


class BrokerAddress(NamedTuple):
    scheme: str
    host: str
    port: int


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://HOST[:PORT]` -> BrokerAddress; anything else is a ConfigError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"'{url}': broker URL must start with {' or '.join(s + '://' for s in SCHEMES)}",
                          field="mqtt")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ConfigError(f"'{url}': the port is not a number from 1 to 65535", field="mqtt") from None
    if not parts.hostname:
        raise ConfigError(f"'{url}': no broker host (expected mqtt://HOST:PORT)", field="mqtt")
    if parts.username or parts.password:
        raise ConfigError(f"'{url}': credentials in the broker URL are not supported", field="mqtt")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"'{url}': a broker URL has no path or query (expected mqtt://HOST:PORT)",
                          field="mqtt")
    return BrokerAddress(parts.scheme, parts.hostname, port)


@dataclass
class OutgoingMessage:
    key: int
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    mid: int | None = None        # paho's message id once handed to the client


class Outbox(Protocol):
    """What the publisher needs from a store of unacknowledged messages (memory now, SQLite later).

    A persistent store returns, after a restart, every stored message from `unsent()`: the new
    client session has no message ids yet.
    """

    def add(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> OutgoingMessage: ...
    def unsent(self) -> list[OutgoingMessage]: ...
    def mark_sent(self, message: OutgoingMessage, mid: int) -> None: ...
    def ack(self, mid: int) -> OutgoingMessage | None: ...
    def __len__(self) -> int: ...


class MemoryOutbox:
    """Messages not yet acknowledged by the broker, oldest first, in memory (lost if the process dies)."""

    def __init__(self) -> None:
        self._messages: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._by_mid: dict[int, int] = {}
        self._next_key = 1

    def add(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> OutgoingMessage:
        message = OutgoingMessage(self._next_key, topic, payload, qos, retain)
        self._messages[message.key] = message
        self._next_key += 1
        return message

    def unsent(self) -> list[OutgoingMessage]:
        """Messages never handed to the client (added while the broker was away)."""
        return [m for m in self._messages.values() if m.mid is None]

    def mark_sent(self, message: OutgoingMessage, mid: int) -> None:
        message.mid = mid
        self._by_mid[mid] = message.key

    def ack(self, mid: int) -> OutgoingMessage | None:
        """The broker has the message with this id: forget it. None if the id is not ours."""
        key = self._by_mid.pop(mid, None)
        return None if key is None else self._messages.pop(key, None)

    def __len__(self) -> int:
        return len(self._messages)


class MqttPublisher:
    """A paho client that announces the device status and delivers the outbox at least once."""

    def __init__(self, url: str, client_id: str, device: str, outbox: Outbox | None = None):
        self.address = parse_mqtt_url(url)
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.connected = False
        self._status_topic = contract.status_topic(device)
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=paho.MQTTv311, clean_session=True)
        # The broker publishes this for us if we vanish without a clean disconnect.
        self._client.will_set(self._status_topic, contract.STATUS_OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._unreachable_logged = False
        # event kind (put by the callbacks above) -> what the daemon's thread does about it
        self._handlers = {"connected": self._connected, "disconnected": self._disconnected,
                          "unreachable": self._unreachable, "refused": self._refused, "acked": self._acked}

    # --- paho's network thread: report only -------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._events.put(("refused", str(reason)))
            return
        # Retained, so a dashboard that subscribes later still sees that the device is up.
        client.publish(self._status_topic, contract.STATUS_ONLINE, qos=1, retain=True)
        self._events.put(("connected", None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._events.put(("disconnected", str(reason)))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._events.put(("unreachable", None))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._events.put(("acked", (mid, reason)))

    # --- the daemon's thread -----------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho retries with backoff until the broker answers."""
        log.info("connecting to broker %s:%d", self.address.host, self.address.port)
        self._client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        message = self.outbox.add(topic, payload, qos, retain)
        if self.connected:
            self._send(message)

    def _send(self, message: OutgoingMessage) -> None:
        # If the link dropped unnoticed, paho keeps the message in its session and resends it,
        # with this same mid, after reconnecting; so a handed-over message is never re-handed.
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        self.outbox.mark_sent(message, info.mid)

    def pump(self, timeout: float = 0.0) -> None:
        """Act on the client's events; waits up to `timeout` seconds for the first one."""
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, detail = event
            self._handlers[kind](detail)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _connected(self, _detail: Any) -> None:
        self.connected, self._unreachable_logged = True, False
        waiting = self.outbox.unsent()
        log.info("connected to broker %s:%d; sending %d queued message(s)",
                 self.address.host, self.address.port, len(waiting))
        for message in waiting:
            self._send(message)

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning("lost the broker (%s); reconnecting, %d message(s) unacknowledged",
                        reason, len(self.outbox))
        self.connected = False

    def _unreachable(self, _detail: Any) -> None:
        # Once per outage: paho keeps retrying with backoff and each try would say the same.
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("broker %s:%d unreachable; retrying with backoff up to %d s, queueing messages",
                        self.address.host, self.address.port, RECONNECT_MAX_S)

    def _refused(self, reason: str) -> None:
        log.error("broker refused the connection: %s; retrying", reason)

    def _acked(self, detail: tuple[int, Any]) -> None:
        mid, reason = detail
        message = self.outbox.ack(mid)
        if message is not None and reason.is_failure:
            log.error("broker rejected a message on %s: %s (dropped)", message.topic, reason)

    def drain(self, timeout: float, cancel: threading.Event | None = None) -> int:
        """Wait until the broker acknowledged everything, `timeout` passed or `cancel` is set.

        Returns how many messages are still unacknowledged."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < deadline and not (cancel and cancel.is_set()):
            self.pump(timeout=min(0.1, max(deadline - time.monotonic(), 0.001)))
        return len(self.outbox)

    def stop(self, timeout: float = 2.0) -> None:
        """Say `offline` (retained) and disconnect cleanly; the broker then drops the last will."""
        if self.connected:
            info = self._client.publish(self._status_topic, contract.STATUS_OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not info.is_published():
                log.warning("broker did not acknowledge the offline status in %.1f s", timeout)
        else:
            log.warning("not connected at stop: could not publish 'offline' "
                        "(the last will covers a lost connection)")
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False
