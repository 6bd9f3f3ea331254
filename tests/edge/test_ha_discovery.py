"""Home Assistant MQTT discovery: topic form, config fields, templates rendered (with Jinja2, Home
Assistant's template engine) against real contract messages, retained delivery through mosquitto,
and a broker ACL that confines a device's discovery topics to its own."""
from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion

from edge.broker import LocalBroker
from edge.daemon import contract
from edge.daemon.ha_discovery import discovery_messages, removal_messages
from edge.daemon.metrics import MetricsCollector
from edge.daemon.rules import RuleEngine, parse_rules
from runtimes import __version__

DEVICE = "cam-03"
# Home Assistant's documented discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config,
# node_id and object_id from [a-zA-Z0-9_-]
HA_TOPIC = re.compile(r"homeassistant/(sensor|binary_sensor)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config")
RULES = parse_rules([{"name": "bus_here", "type": "presence", "label": "bus"},
                     {"name": "door_zone", "type": "region", "polygon": [[0, 0], [100, 0], [100, 100]]}])
PIPELINES = [{"name": "street", "task": "detection", "rules": RULES}, {"name": "pose", "task": "keypoints"},
             {"name": "cls", "task": "classification"}, {"name": "ocr", "task": "ocr"},
             {"name": "portrait", "task": "segmentation"}]


def messages(device: str = DEVICE) -> list[tuple[str, dict]]:
    return [(topic, json.loads(payload))
            for topic, payload, retain in discovery_messages(device, PIPELINES, contract.status_topic(device))]


def test_topics_follow_home_assistants_format_with_the_device_as_node_id():
    found = messages("cam.03")         # a '.' is fine in edge ids, not in Home Assistant's
    assert found and all(HA_TOPIC.fullmatch(topic) for topic, _ in found)
    assert all(topic.split("/")[2] == "cam_03" for topic, _ in found)
    assert all(retain for _t, _p, retain in discovery_messages(DEVICE, PIPELINES, contract.status_topic(DEVICE)))


def test_every_config_has_availability_device_and_a_unique_id():
    found = messages()
    unique_ids = [payload["unique_id"] for _, payload in found]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, payload in found:
        assert payload["availability_topic"] == contract.status_topic(DEVICE)
        assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        assert payload["device"] == {"identifiers": [f"edge_{DEVICE}"], "name": f"edge {DEVICE}",
                                     "model": f"edge {__version__}", "sw_version": __version__, "manufacturer": "edge"}
        assert payload["origin"]["name"] == "edge"
        # state comes from this device's contract topics only
        assert topic_matches_sub(f"edge/{DEVICE}/#", payload["state_topic"])
        assert payload["state_topic"] in {contract.metrics_topic(DEVICE)} | {
            f(DEVICE, p["name"]) for p in PIPELINES for f in (contract.results_topic, contract.events_topic)}
    components = {topic.split("/")[1] for topic, _ in found}
    assert components == {"sensor", "binary_sensor"}
    rule_sensors = [p for t, p in found if t.startswith("homeassistant/binary_sensor/")]
    assert sorted(p["unique_id"] for p in rule_sensors) == [f"edge_{DEVICE}_street_rule_bus_here",
                                                            f"edge_{DEVICE}_street_rule_door_zone"]


# ---- templates against real messages -----------------------------------------------------------
@pytest.fixture(scope="module")
def render():
    jinja2 = pytest.importorskip("jinja2", reason="Jinja2 renders the templates as Home Assistant does")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def render_(template: str, message: dict) -> str:
        payload = contract.message_json(message)
        return env.from_string(template).render(value=payload, value_json=json.loads(payload)).strip()
    return render_


def config_of(unique_suffix: str) -> dict:
    return next(p for _, p in messages() if p["unique_id"] == f"edge_{DEVICE}_{unique_suffix}")


def result(pipeline: str, results: list[dict]) -> dict:
    return contract.result_message(device=DEVICE, pipeline=pipeline, models=["m"], source="/in/a.jpg", seq=1,
                                   latency_ms={"pre": 1.0, "infer": 2.0, "post": 3.0}, results=results)


def test_result_sensor_templates_give_the_state_home_assistant_shows(render):
    boxes = [{"label": "person", "score": 0.9, "box": [1, 2, 3, 4]}, {"label": "bus", "score": 0.8, "box": [5, 6, 7, 8]}]
    street = result("street", boxes)
    objects = config_of("street_objects")
    assert render(objects["value_template"], street) == str(len(boxes))
    assert json.loads(render(objects["json_attributes_template"], street)) == {
        "labels": [b["label"] for b in boxes], "source": street["source"]}
    assert render(config_of("street_objects")["value_template"], result("street", [])) == "0"

    classes = [{"label": "180", "score": 0.97}, {"label": "0", "score": 0.02}]
    assert render(config_of("cls_label")["value_template"], result("cls", classes)) == classes[0]["label"]
    assert render(config_of("cls_label")["value_template"], result("cls", [])) == "none"
    assert json.loads(render(config_of("cls_label")["json_attributes_template"], result("cls", classes))) == {
        "score": classes[0]["score"]}

    lines = [{"text": "EXIT", "score": 0.99, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]},
             {"text": "x" * 300, "score": 0.9, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]}]
    text = render(config_of("ocr_text")["value_template"], result("ocr", lines))
    assert text.startswith("EXIT x") and len(text) == 255           # Home Assistant's state limit

    masks = [{"label": "person", "area_ratio": 0.4123, "box": [0, 0, 9, 9]}]
    assert float(render(config_of("portrait_area")["value_template"], result("portrait", masks))) == 41.2


def test_metric_sensor_templates_read_the_metrics_message(render):
    collector = MetricsCollector()
    for ms in (10.0, 20.0, 30.0):
        collector.record({"pre": 1.0, "infer": ms, "post": 1.0}, pipeline="street")
    collector.count("dropped_frames", 4, pipeline="street")
    collector.add_pipeline("pose")
    snapshot = collector.snapshot({"spool_depth": 5})
    metrics = contract.metrics_message(device=DEVICE, snapshot=snapshot)
    street = snapshot["pipelines"]["street"]
    assert float(render(config_of("street_fps")["value_template"], metrics)) == street["fps"]
    assert float(render(config_of("street_latency_p95")["value_template"], metrics)) == \
        street["latency_ms"]["total"]["p95"]
    assert render(config_of("street_dropped_frames")["value_template"], metrics) == "4"
    assert render(config_of("system_spool_depth")["value_template"], metrics) == "5"
    # a pipeline with no frames yet and a device without thermal zones: "None" is Home Assistant's "unknown"
    assert render(config_of("pose_latency_p95")["value_template"], metrics) == "None"
    expected_temperature = "None" if snapshot["temperature_c"] is None else str(snapshot["temperature_c"])
    assert render(config_of("system_temperature")["value_template"], metrics) == expected_temperature


def test_rule_binary_sensors_follow_only_their_own_rule(render):
    engine = RuleEngine(RULES)
    bus = {"label": "bus", "score": 0.9, "box": [300, 300, 400, 400]}
    appeared = engine.update([bus], contract.utc_timestamp())
    gone = engine.update([], contract.utc_timestamp())
    bus_sensor = config_of("street_rule_bus_here")
    zone_sensor = config_of("street_rule_door_zone")
    on = contract.event_message(device=DEVICE, pipeline="street", event=appeared[0])
    off = contract.event_message(device=DEVICE, pipeline="street", event=gone[0])
    assert render(bus_sensor["value_template"], on) == bus_sensor["payload_on"]
    assert render(bus_sensor["value_template"], off) == bus_sensor["payload_off"]
    assert render(zone_sensor["value_template"], on) == ""     # empty: Home Assistant leaves the state alone
    assert zone_sensor["device_class"] == "occupancy" and bus_sensor["device_class"] == "presence"


# ---- through mosquitto -------------------------------------------------------------------------
def publish_all(broker, items, client_id: str, username: str | None = None, password: str | None = None) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if username:
        client.username_pw_set(username, password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload, retain in items:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_configs_are_retained_for_a_late_home_assistant_and_removed_by_empty_payloads(mqtt_broker, mqtt_subscriber):
    sent = discovery_messages(DEVICE, PIPELINES, contract.status_topic(DEVICE))
    publish_all(mqtt_broker, sent, f"edge-{DEVICE}")
    late = mqtt_subscriber(mqtt_broker, ["homeassistant/#"])        # Home Assistant starting after the device
    for topic, payload, _ in sent:
        received = late.wait_for(topic, 1, timeout=10)[0]
        assert received.retain and received.payload.decode() == payload
    publish_all(mqtt_broker, removal_messages(DEVICE, PIPELINES, contract.status_topic(DEVICE)), f"edge-{DEVICE}")
    later = mqtt_subscriber(mqtt_broker, ["homeassistant/#", contract.status_topic("probe")])
    publish_all(mqtt_broker, [(contract.status_topic("probe"), "online", False)], "probe")
    later.wait_for(contract.status_topic("probe"), 1, timeout=10)   # everything retained has arrived by now
    assert [m.topic for m in later.messages if m.topic.startswith("homeassistant/")] == []


def test_a_broker_acl_confines_discovery_topics_to_the_devices_own(tmp_path, mqtt_subscriber):
    passwords = tmp_path / "passwords"
    for user in ("cam-1", "admin"):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "cam-1" else []), str(passwords), user,
                        f"{user}-secret"], check=True, capture_output=True)
    acl = tmp_path / "acl"
    acl.write_text("user admin\ntopic read #\n\n"
                   "pattern readwrite edge/%u/#\npattern write homeassistant/+/%u/#\n")
    broker = LocalBroker(tmp_path / "broker", extra_config=f"password_file {passwords}\nacl_file {acl}\n")
    broker.start()
    try:
        admin = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"admin-{uuid.uuid4().hex[:6]}")
        admin.username_pw_set("admin", "admin-secret")
        seen: list[str] = []
        last = contract.status_topic("cam-1")
        subscribed, done = threading.Event(), threading.Event()
        admin.on_subscribe = lambda *a: subscribed.set()
        admin.on_message = lambda c, u, m: (seen.append(m.topic), m.topic == last and done.set())
        admin.connect(broker.host, broker.port)
        admin.subscribe([("homeassistant/#", 1), ("edge/#", 1)])
        admin.loop_start()
        assert subscribed.wait(10)
        own = discovery_messages("cam-1", PIPELINES[:1], contract.status_topic("cam-1"))
        foreign = discovery_messages("cam-2", PIPELINES[:1], contract.status_topic("cam-2"))
        # the device's own status goes last: messages from one client arrive in order, so once it is
        # here everything the broker let through is here too
        publish_all(broker, own + foreign + [(last, "online", True)], "cam-1", "cam-1", "cam-1-secret")
        done.wait(20)
        admin.disconnect()
        admin.loop_stop()
    finally:
        broker.stop()
    assert last in seen, broker.log_text()
    assert sorted(t for t in seen if t.startswith("homeassistant/")) == sorted(t for t, _, _ in own)
    assert not any("/cam-2/" in t for t in seen)
