"""The MQTT contract unchanged beyond one mosquitto: through a bridge to a central broker, and on a second
broker implementation (RabbitMQ's MQTT plugin). A real daemon publishes; results, the retained status and
description, commands and their replies, and the last will are checked where the operator reads them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from edge.daemon import contract
from runtimes.errors import EdgeError

from ..conftest import REPO_ROOT, Broker, Subscriber
from .fleet_support import RABBITMQ_HINT, RabbitBroker, bridge_config, fleet_rows, notice_topic, rabbitmq_available

RABBITMQ_START_BUDGET_S = 60.0


def validate(schema_id: str, message: dict) -> None:
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema_id]).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(message)


def check_contract(central, device_url: str, device: str, bundle: Path, picture: Path, tmp_path: Path,
                   edge_daemon, exact_topics: bool = False) -> dict[str, bytes]:
    """A daemon on `device_url`, watched on `central`; the payloads seen there, by topic.

    `exact_topics`: the fleet view names the device (brokers that send retained messages to exact filters only)."""
    pipeline = json.loads((bundle / "manifest.json").read_text())["pipeline"]
    results, reply = contract.results_topic(device, pipeline), contract.reply_topic(device, "pause")
    status, info = contract.status_topic(device), contract.status_info_topic(device)
    sub = Subscriber(central, [results, reply])
    try:
        folder = tmp_path / f"{device}-in"
        folder.mkdir()
        shutil.copy(picture, folder / picture.name)
        daemon = edge_daemon([str(bundle), "--source", str(folder), "--mqtt", device_url, "--device-id", device,
                              "--state-dir", str(tmp_path / f"{device}-state"), "--poll-interval", "0.2",
                              "--metrics-interval", "0.5"])
        result = sub.wait_for(results, 1, timeout=60)[0]
        validate(contract.RESULT_SCHEMA, result.json())
        assert (result.json()["device"], result.json()["source"]) == (device, str(folder / picture.name))

        online, described = Broker.retained(central, status), Broker.retained(central, info)
        assert (online.text, online.retain, described.retain) == (contract.STATUS_ONLINE, True, True)
        validate(contract.STATUS_SCHEMA, described.json())
        assert described.json()["pipelines"][0]["bundle"] == bundle.name

        # Commands reach the device from where the operator is, and the answer comes back.
        sub.client.publish(contract.command_topic(device, "pause"), b"{}", qos=1)
        answer = sub.wait_for(reply, 1, timeout=30)[0].json()
        validate(contract.REPLY_SCHEMA, answer)
        assert answer["ok"] and answer["result"]["paused"] is True, answer

        view = ["--device", device] if exact_topics else []
        row = fleet_rows(central.url, *view)[device]
        assert (row["status"], row["bundles"], row["pipelines"][0]["paused"]) == ("online", [bundle.name], True), row

        daemon.kill()                       # SIGKILL: the last will, from the broker the device was on
        offline = Broker.retained(central, status, text=contract.STATUS_OFFLINE)
        assert (offline.text, offline.retain) == (contract.STATUS_OFFLINE, True)
        assert fleet_rows(central.url, *view)[device]["status"] == "offline"
        return {results: result.payload, info: described.payload}
    finally:
        sub.close()


def test_contract_through_a_mosquitto_bridge(tmp_path, shared_dir, ocr_bundle_dir, edge_daemon):
    central = Broker(tmp_path / "central").start()
    site = Broker(tmp_path / "site", extra_config=bridge_config(central.port, "site1"))
    try:
        site.start()
        Broker.retained(central, notice_topic("site1"), text="1")        # the bridge is up
        on_site = Subscriber(site, ["edge/#"])
        seen = check_contract(central, site.url, "cam-bridged", ocr_bundle_dir,
                              shared_dir / "images" / "ocr_word_en_10.png", tmp_path, edge_daemon)
        # Unchanged: the very bytes the device's own broker got.
        for topic, payload in seen.items():
            assert payload in [m.payload for m in on_site.on(topic)], topic
        on_site.close()
    finally:
        site.stop()
        central.stop()


@pytest.fixture
def rabbitmq(tmp_path_factory) -> RabbitBroker:
    if not rabbitmq_available():
        pytest.fail(RABBITMQ_HINT, pytrace=False)
    broker = RabbitBroker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.start(timeout=RABBITMQ_START_BUDGET_S)
    except EdgeError as err:
        pytest.fail(f"RabbitMQ did not start within the CI budget: {err}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def test_contract_on_rabbitmq_mqtt(tmp_path, shared_dir, ocr_bundle_dir, edge_daemon, rabbitmq):
    # RabbitMQ sends retained messages only to exact topic filters: the fleet view names the device there.
    check_contract(rabbitmq, rabbitmq.url, "cam-rabbit", ocr_bundle_dir, shared_dir / "images" / "ocr_word_en_10.png",
                   tmp_path, edge_daemon, exact_topics=True)
    print(f"RabbitMQ started in {rabbitmq.started_in:.1f} s")
