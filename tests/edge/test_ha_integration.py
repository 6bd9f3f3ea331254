"""A real Home Assistant (2024.3, its own venv) on the test mosquitto, against the real daemon running a
real PP-PicoDet bundle on real pictures: what a Home Assistant user sees, read from Home Assistant's API.

One Home Assistant and one broker serve the whole module (Home Assistant starts in about 2 s once
its venv exists; making the venv takes a few minutes, once, cached under ~/.cache/edge-test).
The tests run in file order and hand the device's state on: results, then daemon restarts, then
a Home Assistant restart, then a rename, then `--ha-cleanup`.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.broker import LocalBroker, free_port
from edge.daemon import contract
from tests.conftest import REPO_ROOT, DaemonProcess, Subscriber
from tests.edge.ha_support import convert_picodet
from tests.home_assistant import HomeAssistant, HomeAssistantUnavailable, ensure_venv

DEVICE = "cam-ha"
PREFIX = "edge_cam_ha"          # Home Assistant's entity ids: device name "edge cam-ha" + entity name


def entity(component: str, name: str) -> str:
    return f"{component}.{PREFIX}_{name}"


@pytest.fixture(scope="module")
def picodet_bundle(shared_dir, tmp_path_factory) -> Path:
    return convert_picodet(shared_dir, tmp_path_factory.mktemp("ha_bundle") / "picodet")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with LocalBroker(tmp_path_factory.mktemp("ha_broker")) as started:
        yield started


@pytest.fixture(scope="module")
def hass(broker, tmp_path_factory):
    try:
        python = ensure_venv()
    except HomeAssistantUnavailable as err:
        pytest.fail(f"could not install Home Assistant for the test: {err}", pytrace=False)
    ha = HomeAssistant(tmp_path_factory.mktemp("ha_config"), free_port(), broker.host, broker.port, python)
    ha.start()
    yield ha
    ha.stop()


class Device:
    """The daemon's config file and folder, and the daemon itself (restartable)."""

    def __init__(self, folder: Path, broker: LocalBroker, bundle: Path):
        self.folder, self.broker, self.bundle = folder, broker, bundle
        self.inbox = folder / "in"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.config = folder / "edge.yaml"
        self.process: DaemonProcess | None = None
        self.write("door", "crowd")

    def write(self, pipeline: str, rule: str) -> None:
        self.config.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{self.broker.url}"}}
state_dir: {self.folder / "state"}
metrics_interval: 1
ha_discovery: true
pipelines:
  - name: {pipeline}
    bundle: {self.bundle}
    source: {self.inbox}
    poll_interval: 0.1
    rules:
      - {{name: {rule}, type: count, label: person, direction: above, value: 2}}
      - {{name: bus_seen, type: presence, label: bus, min_score: 0.5}}
    home_assistant: {{labels: [person, bus, car], image_interval: 0.2, image_width: 320}}
""", encoding="utf-8")

    def start(self) -> DaemonProcess:
        self.process = DaemonProcess([str(self.config)])
        self.process.wait_log(r"connected to broker")
        return self.process

    def add(self, picture: Path, name: str | None = None) -> None:
        shutil.copy(picture, self.inbox / (name or picture.name))


@pytest.fixture(scope="module")
def device(tmp_path_factory, broker, picodet_bundle):
    made = Device(tmp_path_factory.mktemp("ha_device"), broker, picodet_bundle)
    yield made
    if made.process is not None:
        made.process.kill()


@pytest.fixture(scope="module")
def results(broker):
    sub = Subscriber(broker, [f"edge/{DEVICE}/+/results"])
    yield sub
    sub.close()


def next_result(sub: Subscriber, pipeline: str, source_name: str) -> dict:
    topic = contract.results_topic(DEVICE, pipeline)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [m.json() for m in sub.on(topic) if Path(m.json()["source"]).name == source_name]
        if found:
            return found[-1]
        time.sleep(0.1)
    pytest.fail(f"no result for {source_name} on {topic}")


def check_follows(hass: HomeAssistant, result: dict, pipeline: str = "door") -> None:
    """Home Assistant's entities say what this result says."""
    counts = {label: sum(1 for r in result["results"] if r["label"] == label) for label in ("person", "bus", "car")}
    hass.wait_state(f"sensor.{PREFIX}_{pipeline}_last_result",
                    lambda s: s not in ("unknown", "unavailable") and _same_time(s, result["ts"]))
    assert hass.state(f"sensor.{PREFIX}_{pipeline}_objects")["state"] == str(len(result["results"]))
    for label, count in counts.items():
        assert hass.state(f"sensor.{PREFIX}_{pipeline}_{label}_count")["state"] == str(count), label
    objects = hass.state(f"sensor.{PREFIX}_{pipeline}_objects")["attributes"]
    assert objects["source"] == result["source"]
    crowd = "on" if counts["person"] > 2 else "off"
    assert hass.state(f"binary_sensor.{PREFIX}_{pipeline}_{'crowd' if pipeline == 'door' else 'many'}")["state"] \
        == crowd


def _same_time(ha_state: str, ts: str) -> bool:
    """Home Assistant keeps a timestamp sensor's state to the second."""
    from datetime import datetime
    return datetime.fromisoformat(ha_state) == datetime.fromisoformat(ts.replace("Z", "+00:00")).replace(microsecond=0)


def test_entities_are_created_and_follow_results(hass, device, results, shared_dir):
    images = shared_dir / "images"
    device.start()
    device.add(images / "coco_zidane.jpg", "a_zidane.jpg")          # two people
    first = next_result(results, "door", "a_zidane.jpg")
    check_follows(hass, first)
    device.add(images / "coco_bus.jpg", "b_bus.jpg")                # a bus and more people
    bus = next_result(results, "door", "b_bus.jpg")
    assert any(r["label"] == "bus" for r in bus["results"])
    check_follows(hass, bus)
    assert hass.state(entity("binary_sensor", "door_bus_seen"))["state"] == "on"

    found = hass.entities_of(f"edge_{DEVICE}")
    components = sorted({entity_id.split(".")[0] for entity_id in found})
    assert components == ["binary_sensor", "button", "image", "number", "sensor"], found
    assert len(found) >= 20
    assert hass.state(entity("binary_sensor", "door_problem"))["state"] == "off"

    # the image entity shows a JPEG of the last annotated frame, at most 320 wide
    frame = hass.state(entity("image", "door_frame"))
    jpeg = hass.get_bytes(frame["attributes"]["entity_picture"])
    assert jpeg[:3] == b"\xff\xd8\xff"
    import cv2
    import numpy as np
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[1] == 320

    # an input that is no picture: the problem sensor and the error count
    (device.inbox / "c_notes.jpg").write_text("not a picture\n")
    hass.wait_state(entity("binary_sensor", "door_problem"), "on")
    assert hass.state(entity("sensor", "door_errors"))["state"] == "1"
    assert "c_notes.jpg" in hass.state(entity("binary_sensor", "door_problem"))["attributes"]["source"]


def test_buttons_and_the_threshold_number_drive_the_daemon(hass, device, results, shared_dir):
    hass.api("POST", "services/button/press", {"entity_id": entity("button", "door_pause")})
    hass.wait_state(entity("binary_sensor", "door_paused"), "on")
    hass.api("POST", "services/number/set_value", {"entity_id": entity("number", "door_score_threshold"),
                                                   "value": 0.9})
    hass.wait_state(entity("number", "door_score_threshold"), "0.9")
    hass.api("POST", "services/button/press", {"entity_id": entity("button", "door_snapshot")})
    device.process.wait_log(r"command snapshot done")
    hass.api("POST", "services/button/press", {"entity_id": entity("button", "door_resume")})
    hass.wait_state(entity("binary_sensor", "door_paused"), "off")
    device.add(shared_dir / "images" / "coco_bus.jpg", "d_bus_strict.jpg")
    strict = next_result(results, "door", "d_bus_strict.jpg")
    assert all(r["score"] >= 0.9 for r in strict["results"])
    check_follows(hass, strict)
    hass.api("POST", "services/number/set_value", {"entity_id": entity("number", "door_score_threshold"),
                                                   "value": 0.0})
    hass.wait_state(entity("number", "door_score_threshold"), "0.0")


def test_availability_and_state_across_daemon_restarts(hass, device, results, shared_dir):
    images = shared_dir / "images"
    device.add(images / "coco_bus.jpg", "e_bus.jpg")                 # crowd on
    check_follows(hass, next_result(results, "door", "e_bus.jpg"))
    assert hass.state(entity("binary_sensor", "door_crowd"))["state"] == "on"
    last_result = hass.state(entity("sensor", "door_last_result"))["state"]

    assert device.process.terminate() == 0
    hass.wait_state(entity("sensor", "door_objects"), "unavailable")
    device.start()
    # the rule engine restarts off and says so; the last result is still the last result
    hass.wait_state(entity("binary_sensor", "door_crowd"), "off")
    assert hass.state(entity("sensor", "door_last_result"))["state"] == last_result
    assert hass.state(entity("sensor", "door_objects"))["state"] not in ("unknown", "unavailable")

    device.process.process.send_signal(signal.SIGKILL)
    device.process.process.wait()
    hass.wait_state(entity("sensor", "door_objects"), "unavailable")          # the last will
    device.start()
    hass.wait_state(entity("sensor", "door_objects"), lambda s: s != "unavailable")
    device.add(images / "coco_dog.jpg", "f_dog.jpg")                 # no crowd
    check_follows(hass, next_result(results, "door", "f_dog.jpg"))


# read from the metrics, which change every interval and are not retained
METRIC_ENTITIES = ("_cpu_load_1_min", "_temperature", "_spool_depth", "_frames_per_second", "_latency_p95",
                   "_dropped_frames")


def test_states_are_right_after_home_assistant_restarts(hass, device):
    before = {e: hass.state(e)["state"] for e in hass.entities_of(f"edge_{DEVICE}")
              if not e.endswith(METRIC_ENTITIES) and not e.startswith(("button.", "image."))}
    assert len(before) == 11          # (a button's state is its last press, an image's when it arrived)
    hass.restart()
    for entity_id, state in before.items():
        hass.wait_state(entity_id, state, timeout=20)
    assert all(hass.state(e)["state"] not in ("unknown", "unavailable")
               for e in before if e.startswith("binary_sensor."))


def test_a_rename_removes_the_old_entities(hass, device, results, shared_dir):
    old = hass.entities_of(f"edge_{DEVICE}")
    assert device.process.terminate() == 0
    device.write("gate", "many")
    device.start()
    device.add(shared_dir / "images" / "coco_zidane.jpg", "g_zidane.jpg")
    check_follows(hass, next_result(results, "gate", "g_zidane.jpg"), pipeline="gate")
    now = hass.entities_of(f"edge_{DEVICE}")
    stale = [e for e in old if "_door_" in e]
    assert stale and not any(e in now for e in stale), now
    assert all(hass.state(e) is None for e in stale)
    assert entity("binary_sensor", "gate_many") in now
    device.process.wait_log(r"cleared the retained state of 2 topic")      # door's state and image
    time.sleep(2.5)          # two metrics messages reach every metrics template, orphans included
    problems = [line for line in hass.log_text().splitlines()
                if "template" in line.lower() and ("ERROR" in line or "WARNING" in line)
                or "has no attribute" in line or "Invalid state message" in line]
    assert problems == [], "\n".join(problems[:10])


def test_ha_cleanup_removes_every_entity_of_the_device(hass, device, broker):
    assert device.process.terminate() == 0
    cleanup = subprocess.run([sys.executable, "-m", "edge", "run", str(device.config), "--ha-cleanup"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "Home Assistant entit" in cleanup.stdout
    hass.wait_until(lambda: not hass.entities_of(f"edge_{DEVICE}"), 20, "device without entities")
    left = Subscriber(broker, [f"homeassistant/+/{DEVICE}/+/config", f"edge/{DEVICE}/+/state"])
    try:
        time.sleep(1.0)
        assert [m.topic for m in left.messages if m.retain and m.payload] == []
    finally:
        left.close()
    # nothing the daemon sent, in the whole module, made Home Assistant complain
    log = hass.log_text().splitlines()
    assert not [line for line in log if "Traceback" in line or " ERROR " in line], "\n".join(log[-20:])
    assert not [line for line in log if " WARNING " in line and "homeassistant.components.mqtt" in line]
