"""Retained topics the daemon no longer has are cleared on the broker: after a rename, after turning
discovery off, and all of them with `edge run --ha-cleanup`. Real daemon, real PP-PicoDet, real mosquitto."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.daemon import contract
from tests.conftest import REPO_ROOT, Subscriber
from tests.edge.ha_support import convert_picodet

DEVICE = "cam-07"


@pytest.fixture(scope="module")
def bundle(shared_dir, tmp_path_factory) -> Path:
    return convert_picodet(shared_dir, tmp_path_factory.mktemp("cleanup_bundle") / "picodet")


def write_config(path: Path, broker, bundle: Path, inbox: Path, pipeline: str, rule: str, ha: bool = True) -> Path:
    path.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{broker.url}"}}
state_dir: {path.parent / "state"}
metrics_interval: 0
ha_discovery: {str(ha).lower()}
pipelines:
  - name: {pipeline}
    bundle: {bundle}
    source: {inbox}
    poll_interval: 0.1
    rules: [{{name: {rule}, type: presence, label: person}}]
    home_assistant: {{labels: [person], image_interval: 0.1}}
""", encoding="utf-8")
    return path


def retained(broker) -> dict[str, bytes]:
    """Everything the broker retains for this device (a new subscriber's view, once it went quiet)."""
    sub = Subscriber(broker, [f"homeassistant/+/{DEVICE}/+/config", f"edge/{DEVICE}/#"])
    try:
        seen = -1
        while seen != len(sub.messages):
            seen = len(sub.messages)
            time.sleep(0.5)
        return {m.topic: m.payload for m in sub.messages if m.retain and m.payload}
    finally:
        sub.close()


def run_until(edge_daemon, config: Path, pattern: str):
    daemon = edge_daemon([str(config)])
    daemon.wait_log(pattern, timeout=60)
    return daemon


def test_renamed_and_switched_off_entities_are_cleared_and_ha_cleanup_clears_all(
        tmp_path, shared_dir, bundle, mqtt_broker, edge_daemon):
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(shared_dir / "images" / "coco_zidane.jpg", inbox / "a.jpg")
    config = write_config(tmp_path / "edge.yaml", mqtt_broker, bundle, inbox, "door", "people")
    daemon = run_until(edge_daemon, config, r"result seq=1")
    time.sleep(0.5)                                            # the state and the frame after the result
    assert daemon.terminate() == 0
    first = retained(mqtt_broker)
    door = {t for t in first if "/door" in t}
    assert f"homeassistant/binary_sensor/{DEVICE}/door_rule_people/config" in door
    assert {contract.state_topic(DEVICE, "door"), contract.image_topic(DEVICE, "door")} <= door
    assert json.loads(first[contract.state_topic(DEVICE, "door")])["rules"] == {"people": True}
    record = json.loads((tmp_path / "state" / "retained_topics.json").read_text())["topics"]
    assert set(record) == door | {t for t in first if "/system_" in t}

    # renamed pipeline and rule: the old ones go, the new ones come
    write_config(config, mqtt_broker, bundle, inbox, "gate", "folks")
    daemon = run_until(edge_daemon, config, r"clearing \d+ retained topic")
    shutil.copy(shared_dir / "images" / "coco_bus.jpg", inbox / "b.jpg")
    daemon.wait_log(r"result seq=1")
    daemon.wait_log(r"cleared the retained state of 2 topic")     # after Home Assistant's entities went
    assert daemon.terminate() == 0
    second = retained(mqtt_broker)
    assert not [t for t in second if "/door" in t], sorted(second)
    assert f"homeassistant/binary_sensor/{DEVICE}/gate_rule_folks/config" in second
    assert not [t for t in json.loads((tmp_path / "state" / "retained_topics.json").read_text())["topics"]
                if "/door" in t]

    # discovery switched off: every config goes, the pipeline's state stays (it is not Home Assistant's)
    write_config(config, mqtt_broker, bundle, inbox, "gate", "folks", ha=False)
    daemon = run_until(edge_daemon, config, r"cleared the retained state of 1 topic")      # the image
    assert daemon.terminate() == 0
    third = retained(mqtt_broker)
    assert not [t for t in third if t.startswith("homeassistant/")] and contract.state_topic(DEVICE, "gate") in third
    assert contract.image_topic(DEVICE, "gate") not in third

    # --ha-cleanup: configs a lost state folder forgot are found on the broker and cleared too
    write_config(config, mqtt_broker, bundle, inbox, "gate", "folks")
    daemon = run_until(edge_daemon, config, r"connected to broker")
    time.sleep(0.5)
    assert daemon.terminate() == 0
    shutil.rmtree(tmp_path / "state")
    cleanup = subprocess.run([sys.executable, "-m", "edge", "run", str(config), "--ha-cleanup"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert cleanup.returncode == 0, cleanup.stderr
    assert cleanup.stdout.startswith(f"{DEVICE}: cleared "), cleanup.stdout
    left = retained(mqtt_broker)
    assert not [t for t in left if t.startswith("homeassistant/") or t.endswith(("/state", "/image"))], sorted(left)
