"""Publishing to an MQTT broker without losing messages while it is away.

Every message goes through an outbox (`outbox.Outbox`) that holds it until the broker acknowledges
it (PUBACK): the SQLite spool (`spool.Spool`) on a device, `outbox.MemoryOutbox` where nothing must
outlive the process.
Pipelines add messages from their threads; paho's network thread only reports events (connected,
lost, acknowledged, a command arrived) into a queue; the daemon's main thread acts on them in
`pump()`, so the client is driven by one thread and an acknowledgement can never arrive before its
message id is recorded. At most `window` messages are handed to the client at a time, oldest first;
the rest wait in the outbox, so a spool of 100k messages replays without loading it into memory.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from runtimes.errors import ConfigError, EdgeError

from . import contract
from .outbox import MemoryOutbox, NewMessage, OutgoingMessage, Outbox

if TYPE_CHECKING:
    from .config import BrokerConfig

log = logging.getLogger("edge.daemon.mqtt")

# scheme -> default port; mqtts:// is MQTT over TLS.
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
PROTOCOLS = {"3.1.1": paho.MQTTv311, "5": paho.MQTTv5}
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
WINDOW = 100                        # messages handed to the client at once
# Acknowledged messages leave the outbox in batches: one transaction for many instead of one each.
# A crash may then resend what was acknowledged in the last REMOVE_AFTER_S, with the same ids.
REMOVE_BATCH, REMOVE_AFTER_S = 64, 0.2


class BrokerAddress(NamedTuple):
    scheme: str
    host: str
    port: int


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt[s]://HOST[:PORT]` -> BrokerAddress; anything else is a ConfigError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"'{url}': broker URL must start with {' or '.join(s + '://' for s in SCHEMES)}",
                          field="mqtt")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ConfigError(f"'{url}': the port is not a number from 1 to 65535", field="mqtt") from None
    if not parts.hostname:
        raise ConfigError(f"'{url}': no broker host (expected {parts.scheme}://HOST:PORT)", field="mqtt")
    if parts.username or parts.password:
        raise ConfigError(f"'{url}': credentials in the broker URL are not supported "
                          "(use the config's username and password_env)", field="mqtt")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"'{url}': a broker URL has no path or query (expected {parts.scheme}://HOST:PORT)",
                          field="mqtt")
    return BrokerAddress(parts.scheme, parts.hostname, port)


def _broker_config(broker: "BrokerConfig | str") -> "BrokerConfig":
    from .config import BrokerConfig    # config validates URLs with this module: import late

    return BrokerConfig(url=broker) if isinstance(broker, str) else broker


class MqttPublisher:
    """One paho client per daemon (client id = device id): status, last will, the outbox, commands."""

    def __init__(self, broker: "BrokerConfig | str", device: str, outbox: Outbox | None = None,
                 window: int = WINDOW, other_prefixes: tuple[str, ...] = ()):
        self.broker = _broker_config(broker)
        self.address = parse_mqtt_url(self.broker.url)
        self.device = device
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.window = window
        self.connected = False
        self.acked = 0                                   # messages acknowledged since start
        self._status_topic = contract.status_topic(device)
        # The ACL `pattern readwrite edge/%u/#` allows this much; publishing elsewhere is a bug.
        self._prefixes = (f"{contract.TOPIC_ROOT}/{device}/", *other_prefixes)
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._handed: dict[int, int] = {}                # paho mid -> outbox key, handed and not acked
        self._last_key = 0                               # highest outbox key handed in this process
        self._more = True                                # the outbox may hold messages not handed yet
        self._acked_keys: list[int] = []                 # acknowledged, to remove from the outbox
        self._acked_since = 0.0
        self._announcements: dict[str, tuple[bytes, bool]] = {}    # topic -> (payload, retain)
        self._announce_lock = threading.Lock()                      # read by paho's thread on connect
        self._announce_later: set[str] = set()                      # changed while not connected
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._refusal: str | None = None
        self._unreachable_logged = False
        self._client = self._make_client()
        # event kind (put by the callbacks and by publish) -> what the main thread does about it
        self._handlers: dict[str, Callable[[Any], None]] = {
            "connected": self._connected, "disconnected": self._disconnected, "queued": self._queued,
            "acked": self._acked, "unreachable": self._unreachable, "refused": self._refused,
            "message": self._message}

    def _make_client(self) -> paho.Client:
        protocol = PROTOCOLS[self.broker.protocol]
        session = {} if protocol == paho.MQTTv5 else {"clean_session": True}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.device, protocol=protocol, **session)
        # The broker publishes this for us if we vanish without a clean disconnect.
        client.will_set(self._status_topic, contract.STATUS_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_inflight_messages_set(self.window)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password_value())
        if self.address.scheme == "mqtts":
            _set_tls(client, self.broker)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_connect_fail = self._on_publish, self._on_connect_fail
        client.on_message = self._on_message
        return client

    # --- set up before start() ------------------------------------------------------------------
    def announce(self, topic: str, payload: bytes | str, retain: bool = True) -> None:
        """Publish this (QoS 1) on every connect, right after `online` (descriptions, discovery configs);
        announcing a topic again replaces its payload and, once started, publishes it at once."""
        self._check_topic(topic)
        data = payload.encode() if isinstance(payload, str) else payload
        with self._announce_lock:
            self._announcements[topic] = (data, retain)
            if not self.connected:
                self._announce_later.add(topic)
        if self.connected:
            self._client.publish(topic, data, qos=1, retain=retain)

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Call `handler(topic, payload)` in the main thread (in pump) for messages on `topic_filter`."""
        self._subscriptions[topic_filter] = handler

    # --- paho's network thread: report only -----------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._events.put(("refused", str(reason)))
            return
        # Retained, so a dashboard that subscribes later still sees that the device is up.
        client.publish(self._status_topic, contract.STATUS_ONLINE, qos=1, retain=True)
        with self._announce_lock:
            announcements = list(self._announcements.items())
            self._announce_later.clear()        # these very payloads go out now
        for topic, (payload, retain) in announcements:
            client.publish(topic, payload, qos=1, retain=retain)
        if self._subscriptions:
            client.subscribe([(topic_filter, 1) for topic_filter in self._subscriptions])
        self._events.put(("connected", None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._events.put(("disconnected", str(reason)))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._events.put(("unreachable", None))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._events.put(("acked", (mid, reason)))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._events.put(("message", (message.topic, bytes(message.payload))))

    # --- any thread -----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, kind: str = "result") -> int:
        """Put a message in the outbox; the main thread sends it."""
        return self.publish_all([(topic, payload, qos, kind)])[0]

    def publish_all(self, messages: list[NewMessage], also: Callable[[Any], None] | None = None) -> list[int]:
        """Put messages in the outbox in one transaction, with `also` (a ledger record) in it too."""
        for topic, *_rest in messages:
            self._check_topic(topic)
        keys = self.outbox.add_all(messages, also=also)
        # The new messages ride along, so the main thread can usually send them without reading them back.
        self._events.put(("queued", [OutgoingMessage(key, topic, payload, qos)
                                     for key, (topic, payload, qos, _kind) in zip(keys, messages)]))
        return keys

    def _check_topic(self, topic: str) -> None:
        if not topic.startswith(self._prefixes):
            raise EdgeError(f"topic '{topic}' is outside this device's topics ({', '.join(self._prefixes)}...)")

    # --- the main thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho retries with backoff until the broker answers."""
        log.info("connecting to broker %s:%d as '%s'", self.address.host, self.address.port, self.device)
        extra = {"clean_start": True} if self.broker.protocol == "5" else {}
        self._client.connect_async(self.address.host, self.address.port, keepalive=self.broker.keepalive, **extra)
        self._client.loop_start()

    def send_now(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> bool:
        """Publish without the outbox (metrics, command replies); False when not connected."""
        self._check_topic(topic)
        if not self.connected:
            return False
        self._client.publish(topic, payload, qos=qos, retain=retain)
        return True

    def pump(self, timeout: float = 0.0) -> None:
        """Act on the client's events (waiting up to `timeout` s for the first), then hand out more."""
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            event = None
        while event is not None:
            kind, detail = event
            self._handlers[kind](detail)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        if self._acked_keys and (len(self._acked_keys) >= REMOVE_BATCH
                                 or time.monotonic() - self._acked_since >= REMOVE_AFTER_S):
            self._remove_acked()
        if self.connected and self._more:
            self._fill()

    def _remove_acked(self) -> None:
        self.outbox.remove(self._acked_keys)
        self.acked += len(self._acked_keys)
        self._acked_keys = []

    def _fill(self) -> None:
        room = self.window - len(self._handed)
        if room <= 0:
            return
        messages = self.outbox.pending(after=self._last_key, limit=room)
        self._hand(messages)
        self._more = len(messages) == room

    def _hand(self, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            # If the link dropped unnoticed, paho keeps the message in its session and resends it,
            # with this same mid, after reconnecting; so a handed-over message is never re-handed.
            info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            self._handed[info.mid] = message.key
            self._last_key = message.key

    def _acked(self, detail: tuple[int, Any]) -> None:
        mid, reason = detail
        key = self._handed.pop(mid, None)
        if key is None:
            return                  # the status, an announcement or a reply: not from the outbox
        if not self._acked_keys:
            self._acked_since = time.monotonic()
        self._acked_keys.append(key)
        self._more = True
        if reason.is_failure:
            log.error("broker rejected a message (%s); dropped", reason)

    def _queued(self, messages: list[OutgoingMessage]) -> None:
        fresh = [m for m in messages if m.key > self._last_key]
        # Sent at once only if they come right after everything handed so far and fit the window;
        # otherwise (older ones waiting, another thread's messages first) the outbox gives them in order.
        if (fresh and self.connected and not self._more and fresh[0].key == self._last_key + 1
                and len(fresh) <= self.window - len(self._handed)):
            self._hand(fresh)
        elif fresh:
            self._more = True

    def _connected(self, _detail: Any) -> None:
        self.connected, self._unreachable_logged, self._refusal = True, False, None
        self._more = True
        # Announced after paho's thread had sent the announcements on connecting: send those now.
        with self._announce_lock:
            later = [(topic, *self._announcements[topic]) for topic in sorted(self._announce_later)]
            self._announce_later.clear()
        for topic, payload, retain in later:
            self._client.publish(topic, payload, qos=1, retain=retain)
        log.info("connected to broker %s:%d; sending %d queued message(s)",
                 self.address.host, self.address.port, len(self.outbox) - len(self._handed))

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            log.warning("lost the broker (%s); reconnecting, %d message(s) unacknowledged",
                        reason, len(self.outbox))
        self.connected = False

    def _unreachable(self, _detail: Any) -> None:
        # Once per outage: paho keeps retrying with backoff and each try would say the same.
        if not self._unreachable_logged:
            self._unreachable_logged = True
            what = "unreachable or refused the TLS handshake" if self.address.scheme == "mqtts" else "unreachable"
            log.warning("broker %s:%d %s; retrying with backoff up to %d s, queueing messages",
                        self.address.host, self.address.port, what, RECONNECT_MAX_S)

    def _refused(self, reason: str) -> None:
        if reason != self._refusal:     # the same refusal on every retry is said once
            log.error("broker refused the connection: %s; retrying", reason)
        self._refusal = reason

    def _message(self, detail: tuple[str, bytes]) -> None:
        topic, payload = detail
        for topic_filter, handler in self._subscriptions.items():
            if paho.topic_matches_sub(topic_filter, topic):
                handler(topic, payload)

    @property
    def inflight(self) -> int:
        """Messages handed to the client and not acknowledged yet."""
        return len(self._handed)

    def drain(self, timeout: float, cancel: threading.Event | None = None) -> int:
        """Wait until the broker acknowledged everything, `timeout` passed or `cancel` is set.

        Returns how many messages are still unacknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            if self._acked_keys:
                self._remove_acked()
            if not len(self.outbox) or time.monotonic() >= deadline or (cancel and cancel.is_set()):
                return len(self.outbox)
            self.pump(timeout=min(0.1, max(deadline - time.monotonic(), 0.001)))

    def stop(self, timeout: float = 2.0) -> None:
        """Say `offline` (retained) and disconnect cleanly; the broker then drops the last will."""
        if self._acked_keys:
            self._remove_acked()
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


def _set_tls(client: paho.Client, broker: "BrokerConfig") -> None:
    tls = broker.tls
    ca, cert, key = ((str(tls.ca) if tls.ca else None), (str(tls.cert) if tls.cert else None),
                     (str(tls.key) if tls.key else None)) if tls else (None, None, None)
    try:
        # Verifies the broker's certificate and host name (against the system's CAs when ca is None).
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ConfigError(f"TLS files unusable: {err}", field="broker.tls") from None
