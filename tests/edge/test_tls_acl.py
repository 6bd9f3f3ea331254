"""A locked-down broker: mosquitto with TLS (client certificates required), a password file and the ACL
`pattern readwrite edge/%u/#` with `use_username_as_clientid true`. Strangers are refused, the daemon
works through it, and one device cannot write into another device's topics."""
from __future__ import annotations

import json
import queue
import shutil
import ssl
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.broker import Lockdown, mosquitto_passwd_binary
from edge.daemon import contract
from runtimes.errors import EdgeError

from ..conftest import Broker, Pki, Subscriber, make_pki

USERS = {"cam-a": "secret-a", "cam-b": "secret-b", "monitor": "secret-m"}
# Every device gets its own subtree; the monitor (a dashboard) may read everything.
ACL = "pattern readwrite edge/%u/#\n\nuser monitor\ntopic read edge/#\n"


@pytest.fixture
def locked_broker(tmp_path_factory, broker_pki) -> Broker:
    try:
        mosquitto_passwd_binary()
    except EdgeError as err:
        pytest.skip(str(err))
    lockdown = Lockdown(ca=broker_pki.ca, cert=broker_pki.server_cert, key=broker_pki.server_key,
                        users=USERS, acl=ACL, require_client_cert=True)
    broker = Broker(tmp_path_factory.mktemp("mosquitto-tls"), lockdown=lockdown)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def tls_client(pki: Pki, *, username: str | None, cert_name: str | None, ca: Path | None = None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv311)
    cert, key = pki.client(cert_name) if cert_name else (None, None)
    client.tls_set(ca_certs=str(ca or pki.ca), certfile=cert and str(cert), keyfile=key and str(key))
    if username is not None:
        client.username_pw_set(username, USERS.get(username, "wrong"))
    return client


def connect_outcome(broker: Broker, client: paho.Client, timeout: float = 15.0) -> str:
    """'connected', 'refused: <reason>', 'dropped: <reason>' or 'tls: <error>' for one attempt."""
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: outcome.put(f"refused: {rc}" if rc.is_failure else "connected")
    client.on_disconnect = lambda c, u, f, rc, p: outcome.put(f"dropped: {rc}")
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (ssl.SSLError, OSError) as err:
        return f"tls: {err}"
    client.loop_start()
    try:
        return outcome.get(timeout=timeout)
    finally:
        client.disconnect()
        client.loop_stop()


class SecureSubscriber(Subscriber):
    """conftest's Subscriber, connecting with TLS, a client certificate and a user's password."""

    def __init__(self, broker: Broker, pki: Pki, username: str, topics: list[str]):
        self.topics, self.messages = topics, []
        self._cond, self._subscribed = threading.Condition(), threading.Event()
        self.client = tls_client(pki, username=username, cert_name=username)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise RuntimeError(f"monitor could not subscribe to {topics}")


def test_strangers_are_refused(locked_broker, broker_pki, tmp_path):
    assert connect_outcome(locked_broker, tls_client(broker_pki, username="monitor", cert_name="monitor")) \
        == "connected"
    # A valid certificate is not enough: no user name, or a wrong password, gets "not authorized".
    no_user = connect_outcome(locked_broker, tls_client(broker_pki, username=None, cert_name="monitor"))
    assert no_user.startswith("refused") and "authori" in no_user.lower()
    wrong = tls_client(broker_pki, username="cam-a", cert_name="cam-a")
    wrong.username_pw_set("cam-a", "not-the-password")
    assert connect_outcome(locked_broker, wrong).startswith("refused")
    # Without a client certificate the TLS handshake itself fails (TLS 1.3 says so after it, as a drop).
    no_cert = connect_outcome(locked_broker, tls_client(broker_pki, username="cam-a", cert_name=None))
    assert no_cert.startswith(("tls", "dropped")), no_cert
    # A broker whose certificate another CA signed is not trusted.
    other_ca = make_pki(tmp_path / "other").ca
    assert connect_outcome(locked_broker, tls_client(broker_pki, username="cam-a", cert_name="cam-a",
                                                     ca=other_ca)).startswith("tls")


def test_daemon_works_through_tls_and_password_and_a_device_cannot_write_another_devices_topics(
        locked_broker, broker_pki, tmp_path, shared_dir, ocr_bundle_dir, edge_daemon, monkeypatch):
    folder, state = tmp_path / "in", tmp_path / "state"
    folder.mkdir()
    shutil.copy(shared_dir / "images" / "ocr_word_en_10.png", folder / "a.png")
    cert, key = broker_pki.client("cam-a")
    config = tmp_path / "edge.yaml"
    config.write_text(
        "device_id: cam-a\n"
        "broker:\n"
        f"  url: {locked_broker.url}\n"
        f"  tls: {{ca: {broker_pki.ca}, cert: {cert}, key: {key}}}\n"
        "  username: cam-a\n"
        "  password_env: EDGE_TEST_MQTT_PASSWORD\n"
        f"state_dir: {state}\n"
        "metrics_interval: 0\n"
        "pipelines:\n"
        f"  - {{name: ocr, bundle: {ocr_bundle_dir}, source: {folder}, poll_interval: 0.2}}\n", encoding="utf-8")
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", USERS["cam-a"])     # inherited by the daemon process
    monitor = SecureSubscriber(locked_broker, broker_pki, "monitor", ["edge/#"])
    try:
        daemon = edge_daemon([str(config)])
        results = contract.results_topic("cam-a", "ocr")
        got = monitor.wait_for(results, 1, timeout=45)[0].json()
        assert (got["device"], Path(got["source"]).name) == ("cam-a", "a.png")
        assert "PAIN" in [line["text"] for line in got["results"]]
        assert monitor.wait_for(contract.status_topic("cam-a"), 1)[0].text == contract.STATUS_ONLINE

        # Device B, authenticated, forges a result on A's topic, then writes on its own topic.
        intruder = tls_client(broker_pki, username="cam-b", cert_name="cam-b")
        assert connect_outcome_and_publish(locked_broker, intruder, [
            (results, json.dumps({**got, "id": "forged"})), ("edge/cam-b/ocr/results", "b's own")])
        monitor.wait_for("edge/cam-b/ocr/results", 1)      # B's second message arrived, so its first was handled
        assert [m.json()["id"] for m in monitor.on(results)] == [got["id"]]

        assert daemon.terminate() == 0, daemon.log
        assert "Traceback" not in daemon.log
    finally:
        monitor.close()


def connect_outcome_and_publish(broker: Broker, client: paho.Client, messages: list[tuple[str, str]]) -> bool:
    """Connect, publish each (QoS 1, in order) and wait for every PUBACK; True when all were acknowledged."""
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not connected.wait(15):
            return False
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=15)
        return all(info.is_published() for info in infos)
    finally:
        client.disconnect()
        client.loop_stop()
