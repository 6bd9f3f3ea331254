"""The MQTT side: the contract's payloads, the outbox across broker outages, status and last will."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.daemon.config import BrokerConfig
from edge.daemon.mqtt import MqttPublisher, parse_mqtt_url
from edge.daemon.outbox import MemoryOutbox
from edge.daemon.spool import Spool, StateDb
from runtimes.errors import ConfigError, EdgeError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-02"


def schema(schema_id: str) -> dict:
    return json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema_id]).read_text(encoding="utf-8"))


def pipeline_of(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["pipeline"]


def message_id(received) -> str:
    return received.json()["id"]


def daemon_args(bundle: Path, folder: Path, broker, state: Path, *extra: str) -> list[str]:
    return [str(bundle), "--source", str(folder), "--mqtt", broker.url, "--device-id", DEVICE,
            "--state-dir", str(state), "--poll-interval", "0.2", *extra]


def test_results_made_while_the_broker_is_away_all_arrive_after_it_returns(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    images, folder = shared_dir / "images", tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "ocr_word_en_10.png", folder / "a.png")
    topic = contract.results_topic(DEVICE, pipeline_of(ocr_bundle_dir))
    # A persistent session: the broker keeps what arrives for it while it is reconnecting.
    sub = mqtt_subscriber(mqtt_broker, [topic], persistent=True)
    daemon = edge_daemon(daemon_args(ocr_bundle_dir, folder, mqtt_broker, tmp_path / "state"))
    sub.wait_for(topic, 1, timeout=45)

    mqtt_broker.stop()
    daemon.wait_log(r"lost the broker")
    shutil.copy(images / "ocr_word_ch_1.jpg", folder / "b.jpg")
    shutil.copy(images / "ocr_word_en_10.png", folder / "c.png")
    daemon.wait_log(r"result seq=\d+ .*broker away: queued", count=2, timeout=30)
    mqtt_broker.start()

    # QoS 1 is at least once: the broker may redeliver what it had sent just before it stopped.
    by_id = {m.json()["id"]: m.json() for m in sub.wait_for(topic, 3, timeout=50, distinct=message_id)}
    assert sorted(m["seq"] for m in by_id.values()) == [1, 2, 3]
    assert sorted(Path(m["source"]).name for m in by_id.values()) == ["a.png", "b.jpg", "c.png"]
    daemon.wait_log(r"connected to broker .*sending 2 queued message")
    assert daemon.terminate() == 0, daemon.log
    assert {message_id(m) for m in sub.on(topic)} == set(by_id)


@pytest.mark.parametrize("store", ["memory", "spool"])
def test_publisher_keeps_messages_until_the_broker_acknowledges_them(store, tmp_path, mqtt_broker, mqtt_subscriber):
    topic = "edge/outbox-test/p/results"
    sub = mqtt_subscriber(mqtt_broker, [topic], persistent=True)
    mqtt_broker.stop()
    outbox = MemoryOutbox() if store == "memory" else Spool(StateDb(tmp_path))
    publisher = MqttPublisher(mqtt_broker.url, "outbox-test", outbox)
    publisher.start()
    try:
        for n in range(25):
            publisher.publish(topic, f"message {n}".encode(), qos=1)
        publisher.pump(timeout=0.5)
        assert (publisher.connected, len(publisher.outbox)) == (False, 25)

        mqtt_broker.start()
        assert publisher.drain(timeout=45) == 0
    finally:
        publisher.stop()
    got = [m.text for m in sub.wait_for(topic, 25, timeout=20)]
    assert got == [f"message {n}" for n in range(25)]


def test_messages_in_flight_when_the_broker_dies_are_delivered_after_it_restarts(mqtt_broker, mqtt_subscriber):
    topic = "edge/inflight-test/p/results"
    subscribed_at = time.time()
    sub = mqtt_subscriber(mqtt_broker, [topic], persistent=True)
    mqtt_broker.wait_saved(since=subscribed_at)     # the subscriber's session survives the SIGKILL
    publisher = MqttPublisher(mqtt_broker.url, "inflight-test")
    publisher.start()
    try:
        while not publisher.connected:
            publisher.pump(timeout=0.2)
        mqtt_broker.freeze()
        for n in range(5):
            publisher.publish(topic, f"in flight {n}".encode(), qos=1)
        publisher.pump()
        # Handed to the client and written to the socket, but never acknowledged.
        assert len(publisher.outbox) == 5 and publisher.inflight == 5
        mqtt_broker.kill()
        mqtt_broker.start()
        assert publisher.drain(timeout=45) == 0
    finally:
        publisher.stop()
    got = [m.text for m in sub.wait_for(topic, 5, timeout=20)]
    assert sorted(set(got)) == [f"in flight {n}" for n in range(5)]


def test_last_will_reports_a_killed_daemon_offline(tmp_path, ocr_bundle_dir, mqtt_broker, edge_daemon):
    (tmp_path / "in").mkdir()
    daemon = edge_daemon(daemon_args(ocr_bundle_dir, tmp_path / "in", mqtt_broker, tmp_path / "state"))
    daemon.wait_log(r"connected to broker")
    status = contract.status_topic(DEVICE)
    online = mqtt_broker.retained(status)
    assert (online.text, online.retain) == (contract.STATUS_ONLINE, True)
    daemon.kill()      # SIGKILL: no clean disconnect, so the broker sends the will
    offline = mqtt_broker.retained(status, text=contract.STATUS_OFFLINE)
    assert (offline.text, offline.retain) == (contract.STATUS_OFFLINE, True)


def test_stop_with_the_broker_away_waits_a_bounded_time_and_exits_0(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, edge_daemon):
    folder = tmp_path / "in"
    folder.mkdir()
    daemon = edge_daemon(daemon_args(ocr_bundle_dir, folder, mqtt_broker, tmp_path / "state",
                                     "--drain-timeout", "1"))
    daemon.wait_log(r"connected to broker")
    mqtt_broker.stop()
    daemon.wait_log(r"lost the broker")
    shutil.copy(shared_dir / "images" / "ocr_word_en_10.png", folder / "late.png")
    daemon.wait_log(r"result seq=1 .*broker away: queued, 1 waiting")
    assert daemon.terminate() == 0, daemon.log
    assert daemon.wait_log(r"1 message\(s\) were never acknowledged by the broker and are kept in the spool")
    assert "Traceback" not in daemon.log


def test_mqtt_5_delivers_like_3_1_1(mqtt_broker, mqtt_subscriber):
    topic = "edge/v5-test/p/results"
    sub = mqtt_subscriber(mqtt_broker, [topic])
    publisher = MqttPublisher(BrokerConfig(url=mqtt_broker.url, protocol="5"), "v5-test")
    publisher.start()
    try:
        for n in range(3):
            publisher.publish(topic, f"v5 {n}".encode())
        assert publisher.drain(timeout=30) == 0
    finally:
        publisher.stop()
    assert [m.text for m in sub.wait_for(topic, 3)] == ["v5 0", "v5 1", "v5 2"]


def test_publisher_writes_only_under_its_own_device():
    publisher = MqttPublisher("mqtt://127.0.0.1:1", "cam-a")
    for topic in ("edge/cam-b/p/results", "edge/cam-ab/p/results", "homeassistant/sensor/x/config", "edge/cam-a"):
        with pytest.raises(EdgeError, match="outside this device's topics"):
            publisher.publish(topic, b"x")
    assert len(publisher.outbox) == 0


@pytest.mark.parametrize("url, expected", [
    ("mqtt://127.0.0.1:1884", ("mqtt", "127.0.0.1", 1884)),
    ("mqtt://broker.local", ("mqtt", "broker.local", 1883)),
    ("mqtts://broker.local", ("mqtts", "broker.local", 8883)),
])
def test_broker_url_is_parsed(url, expected):
    assert tuple(parse_mqtt_url(url)) == expected


@pytest.mark.parametrize("url, problem", [
    ("tcp://broker:1883", "must start with mqtt://"),
    ("mqtt://:1883", "no broker host"),
    ("mqtt://broker:port", "port is not a number"),
    ("mqtt://user:secret@broker:1883", "credentials"),
    ("mqtt://broker:1883/topic", "no path"),
])
def test_bad_broker_url_says_what_is_wrong(url, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_mqtt_url(url)


def test_result_message_is_valid_json_of_its_schema_even_with_numpy_values():
    message = contract.result_message(
        device="cam-01", pipeline="ppocr", models=["det", "rec"], source="shelf.jpg", seq=7,
        latency_ms={"pre": np.float32(1.5), "infer": 20.0, "post": 0.25},
        results=[{"text": "PAIN", "score": np.float64(0.99), "box": np.array([[0, 0], [9, 0], [9, 4], [0, 4]])}])
    decoded = json.loads(contract.encode_message(message).decode("utf-8"))
    jsonschema.validate(decoded, schema(contract.RESULT_SCHEMA), cls=jsonschema.Draft202012Validator)
    jsonschema.validate(decoded["results"][0], schema(contract.RESULT_SCHEMA)["$defs"]["ocr_line"])
    assert decoded["results"][0]["box"][2] == [9, 4]
    assert decoded["ts"].endswith("Z")
    with pytest.raises(ValueError):
        contract.encode_message({**message, "latency_ms": {"pre": float("nan")}})


def test_error_message_holds_one_bounded_line():
    message = contract.error_message(device="cam-01", pipeline="ppocr", source="x.jpg",
                                     error="\n  first line  \nsecond line\n" + "y" * 900)
    assert message["error"] == "first line"
    assert "seq" not in message
    long = contract.error_message(device="cam-01", pipeline="ppocr", source="x.jpg", error="z" * 900, seq=3)
    assert len(long["error"]) == 500 and long["seq"] == 3
    for each in (message, long):
        jsonschema.validate(each, schema(contract.ERROR_SCHEMA), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "dev ice", "-lead", "x" * 65])
def test_topic_segments_refuse_separators_and_wildcards(bad):
    with pytest.raises(ConfigError):
        contract.check_topic_segment(bad, "device_id")
