"""The operator's side of an update: offer a package to devices and serve its chunks until each device
reports how it ended (`done`, `rolled_back` or `failed` on `edge/<id>/ota`).

One MQTT client serves any number of devices at once. The offer goes to `edge/<id>/cmd/ota` (QoS 1) and is
sent again every `reoffer_s` until the device answers, so a device that is offline or restarting gets it
when it is back; chunks are read from the package file as the device asks for them, so a device that
restarted or lost the broker just asks again for what it misses. Only states published after the device
accepted this offer count: a retained state of an earlier attempt does not end the push.
"""
from __future__ import annotations

import json
import logging
import queue
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from runtimes.bundle import sha256_of
from runtimes.errors import EdgeError

from ..daemon import contract
from ..daemon.config import BrokerConfig
from ..daemon.mqtt import PROTOCOLS, _set_tls, parse_mqtt_url
from ..packaging.install import _open, _read_manifest
from .fetch import chunk_count, encode_chunk

log = logging.getLogger("edge.ota")

FINAL = ("done", "rolled_back", "failed")
CHUNK_SIZE = 256 * 1024
REOFFER_S = 10.0


class OtaPushError(EdgeError):
    """The push could not be made (broker, package); a device's own failure is a result, not this."""


@dataclass
class DeviceProgress:
    device: str
    accepted: bool = False
    refused: str | None = None
    state: dict[str, Any] | None = None       # the last edge.ota/1 seen since the offer was accepted
    offered_at: float = 0.0
    chunks_sent: int = 0

    @property
    def outcome(self) -> str | None:
        if self.refused:
            return "refused"
        if self.accepted and self.state and self.state["state"] in FINAL:
            return self.state["state"]
        return None


@dataclass
class Offer:
    package: Path
    body: dict[str, Any]
    chunk_size: int

    @classmethod
    def of(cls, package: Path, chunk_size: int = CHUNK_SIZE, url: str | None = None) -> "Offer":
        package = Path(package)
        with _open(package) as tar:
            manifest = _read_manifest(tar, package)
        digest = sha256_of(package)
        body = {"offer": digest[:16], "name": manifest.name, "version": manifest.version,
                "size": package.stat().st_size, "sha256": digest, "chunk_size": chunk_size}
        if url:
            body["url"] = url
        return cls(package, body, chunk_size)


@dataclass
class WireCount:
    messages: int = 0
    bytes: int = 0                          # topic + payload of everything the operator published
    chunk_bytes: int = 0                    # chunk payloads alone
    per_device: dict[str, int] = field(default_factory=dict)


class Operator:
    def __init__(self, broker: BrokerConfig | str, report: Callable[[str], None] = lambda line: None):
        self.broker = BrokerConfig(url=broker) if isinstance(broker, str) else broker
        self.address = parse_mqtt_url(self.broker.url)
        self.report = report
        self.wire = WireCount()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-ota-{uuid.uuid4().hex[:12]}",
                                   protocol=PROTOCOLS[self.broker.protocol])
        if self.broker.username is not None:
            self._client.username_pw_set(self.broker.username, self.broker.password_value())
        if self.address.scheme == "mqtts":
            _set_tls(self._client, self.broker)
        self._client.max_inflight_messages_set(64)
        self._client.on_connect = lambda c, u, f, rc, p: self._events.put(("connect", rc))
        self._client.on_disconnect = lambda c, u, f, rc, p: self._events.put(("disconnect", rc))
        self._client.on_message = lambda c, u, m: self._events.put(("message", (m.topic, bytes(m.payload))))
        self._filters: list[str] = []
        self.connected = False

    def __enter__(self) -> "Operator":
        try:
            self._client.connect_async(self.address.host, self.address.port, keepalive=30)
        except (OSError, ValueError) as err:
            raise OtaPushError(f"cannot reach the broker {self.broker.url}: {err}") from None
        self._client.reconnect_delay_set(1, 10)
        self._client.loop_start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _publish(self, topic: str, payload: bytes, device: str, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain)
        self.wire.messages += 1
        self.wire.bytes += len(topic) + len(payload)
        self.wire.per_device[device] = self.wire.per_device.get(device, 0) + len(topic) + len(payload)

    def watch(self, filters: list[str]) -> None:
        self._filters += filters
        if self.connected:
            self._client.subscribe([(f, 1) for f in filters])

    def pump(self, timeout: float, on_message: Callable[[str, bytes], None]) -> None:
        try:
            kind, detail = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if kind == "connect":
                if detail.is_failure:
                    raise OtaPushError(f"the broker {self.broker.url} refused the operator: {detail}")
                self.connected = True
                if self._filters:
                    self._client.subscribe([(f, 1) for f in self._filters])
            elif kind == "disconnect":
                self.connected = False
                self.report(f"lost the broker ({detail}); reconnecting")
            else:
                on_message(*detail)
            try:
                kind, detail = self._events.get_nowait()
            except queue.Empty:
                return

    def wait_connected(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.connected:
            if time.monotonic() > deadline:
                raise OtaPushError(f"cannot reach the broker {self.broker.url} within {timeout:.0f} s")
            self.pump(0.1, lambda topic, payload: None)

    # --- one push to some devices ------------------------------------------------------------------
    def push(self, offer: Offer, devices: list[str], timeout: float = 600.0,
             reoffer_s: float = REOFFER_S) -> dict[str, DeviceProgress]:
        progress = {d: DeviceProgress(d) for d in devices}
        self.watch([t for d in devices for t in (contract.ota_topic(d), contract.ota_want_topic(d),
                                                  contract.reply_topic(d, "ota"))])
        self.wait_connected()
        time.sleep(0.2)         # let the subscriptions settle before anything answers them
        deadline = time.monotonic() + timeout
        with open(offer.package, "rb") as package:
            while any(p.outcome is None for p in progress.values()):
                if time.monotonic() > deadline:
                    break
                for p in progress.values():
                    if not p.accepted and not p.refused and self.connected \
                            and time.monotonic() - p.offered_at >= reoffer_s:
                        p.offered_at = time.monotonic()
                        body = dict(offer.body, request_id=uuid.uuid4().hex)
                        self._publish(contract.command_topic(p.device, "ota"), json.dumps(body).encode(), p.device)
                self.pump(0.1, lambda topic, payload: self._message(topic, payload, offer, progress, package))
        return progress

    def _message(self, topic: str, payload: bytes, offer: Offer, progress: dict[str, DeviceProgress],
                 package: Any) -> None:
        device = topic.split("/")[1]
        p = progress.get(device)
        if p is None:
            return
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if topic == contract.reply_topic(device, "ota"):
            if data.get("ok"):
                p.accepted = True
                if data["result"].get("state") in FINAL:
                    p.state = {"state": data["result"]["state"], "error": None}
                self.report(f"{device}: accepted ({data['result'].get('state')})")
            else:
                p.refused = data.get("error", "refused")
                self.report(f"{device}: refused: {p.refused}")
        elif topic == contract.ota_want_topic(device):
            if data.get("offer") == offer.body["offer"] and "url" not in offer.body:
                self._serve(device, data.get("chunks", []), offer, package, p)
        elif topic == contract.ota_topic(device) and p.accepted:
            if (data.get("offer") or {}).get("offer") == offer.body["offer"]:
                if p.state is None or p.state.get("state") != data["state"]:
                    self.report(f"{device}: {data['state']}" + (f": {data['error']}" if data.get("error") else ""))
                p.state = data

    def _serve(self, device: str, chunks: list[Any], offer: Offer, package: Any, p: DeviceProgress) -> None:
        count = chunk_count(offer.body["size"], offer.chunk_size)
        for index in chunks:
            if not isinstance(index, int) or not 0 <= index < count:
                continue
            package.seek(index * offer.chunk_size)
            payload = encode_chunk(package.read(offer.chunk_size))
            self._publish(contract.ota_chunk_topic(device, offer.body["offer"], index), payload, device)
            self.wire.chunk_bytes += len(payload)
            p.chunks_sent += 1
