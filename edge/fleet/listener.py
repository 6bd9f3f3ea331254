"""The operator's read-only MQTT client: subscribes to every device's retained topics, feeds a Fleet.

paho's network thread only queues what arrives; the caller's thread applies it (`poll`), so the
Fleet is touched by one thread. The client publishes nothing and has no last will: a fleet view
coming and going leaves no trace on the broker (clean session, a random client id).
"""
from __future__ import annotations

import queue
import ssl
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from runtimes.errors import EdgeError

from ..daemon.config import BrokerConfig
from ..daemon.mqtt import PROTOCOLS, parse_mqtt_url
from .view import Fleet, topic_filters

CONNECT_TIMEOUT_S = 10.0
# Retained messages come in one burst right after the subscription is granted; this much silence ends it.
QUIET_S = 0.5


class FleetListener:
    """`with FleetListener(broker, devices) as listener: listener.settle(3); listener.fleet.rows()`."""

    def __init__(self, broker: BrokerConfig, devices: list[str] | None = None):
        self.broker, self.filters = broker, topic_filters(devices)
        self.address = parse_mqtt_url(broker.url)
        self.fleet = Fleet()
        self.connected = False
        self._arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-fleet-{uuid.uuid4().hex[:12]}",
                             protocol=PROTOCOLS[self.broker.protocol],
                             **({"clean_session": True} if self.broker.protocol == "3.1.1" else {}))
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password_value())
        if self.address.scheme == "mqtts":
            tls = self.broker.tls
            try:
                client.tls_set(ca_certs=str(tls.ca) if tls and tls.ca else None,
                               certfile=str(tls.cert) if tls and tls.cert else None,
                               keyfile=str(tls.key) if tls and tls.key else None, cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as err:
                raise EdgeError(f"TLS files unusable: {err}") from None
        client.reconnect_delay_set(1, 10)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_subscribe, client.on_message = self._on_subscribe, self._on_message
        return client

    # --- paho's thread ----------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            return
        self.connected = True
        client.subscribe([(topic_filter, 1) for topic_filter in self.filters])

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected = False

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            self._refused = f"subscription refused ({refused[0]}); the broker's ACL may not let this user read edge/#"
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._arrived.put((message.topic, bytes(message.payload)))

    # --- the caller's thread ----------------------------------------------------------------------
    def start(self) -> "FleetListener":
        """Connect and subscribe; EdgeError in one line if the broker cannot be reached or refuses."""
        where = f"{self.address.host}:{self.address.port}"
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=self.broker.keepalive)
        except (OSError, ssl.SSLError) as err:
            raise EdgeError(f"cannot reach the broker at {where}: {getattr(err, 'strerror', None) or err}") from None
        self._client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._subscribed.is_set() and self._refused is None and time.monotonic() < deadline:
            self._subscribed.wait(0.05)
        if self._refused is not None:
            self.stop()
            raise EdgeError(f"the broker at {where} refused: {self._refused}")
        if not self._subscribed.is_set():
            self.stop()
            raise EdgeError(f"the broker at {where} did not answer within {CONNECT_TIMEOUT_S:.0f} s")
        return self

    def poll(self, timeout: float) -> list[str]:
        """Apply what arrived, waiting up to `timeout` s for the first message; the devices that changed."""
        changed: list[str] = []
        try:
            item = self._arrived.get(timeout=timeout) if timeout > 0 else self._arrived.get_nowait()
        except queue.Empty:
            return changed
        while item is not None:
            device = self.fleet.update(*item)
            if device is not None and device not in changed:
                changed.append(device)
            try:
                item = self._arrived.get_nowait()
            except queue.Empty:
                item = None
        return changed

    def settle(self, longest: float, quiet: float = QUIET_S) -> None:
        """Take the retained burst: until `quiet` s pass without a message (after at least one), or `longest` s."""
        deadline = time.monotonic() + longest
        heard = False
        while (left := deadline - time.monotonic()) > 0:
            changed = self.poll(min(left, quiet))
            if not changed and heard and self._arrived.empty():
                return
            heard = heard or bool(changed)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "FleetListener":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
