"""Home Assistant MQTT discovery: topic form, config fields, templates rendered (with Jinja2, Home
Assistant's template engine) against real contract messages, retained delivery through mosquitto,
and a broker ACL that confines a device's discovery topics to its own. (A real Home Assistant reads
them in test_ha_integration.py.)"""
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
from edge.daemon.ha_discovery import HaPipelineOptions, discovery_messages, removal_messages
from edge.daemon.metrics import MetricsCollector
from edge.daemon.pipeline_state import PipelineState
from edge.daemon.rules import RuleEngine, parse_rules
from runtimes import __version__

DEVICE = "cam-03"
# Home Assistant's documented discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config,
# node_id and object_id from [a-zA-Z0-9_-]
HA_TOPIC = re.compile(r"homeassistant/(sensor|binary_sensor|button|number|image)/(?:[a-zA-Z0-9_-]+/)?"
                      r"[a-zA-Z0-9_-]+/config")
RULES = parse_rules([{"name": "bus_here", "type": "presence", "label": "bus"},
                     {"name": "door_zone", "type": "region", "polygon": [[0, 0], [100, 0], [100, 100]]}])
PIPELINES = [{"name": "street", "task": "detection", "rules": RULES, "labels": ["person", "traffic light"],
              "image": True},
             {"name": "pose", "task": "keypoints"}, {"name": "cls", "task": "classification"},
             {"name": "ocr", "task": "ocr"}, {"name": "portrait", "task": "segmentation"}]


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
    own = {contract.metrics_topic(DEVICE)} | {contract.state_topic(DEVICE, p["name"]) for p in PIPELINES}
    for topic, payload in found:
        assert payload["availability_topic"] == contract.status_topic(DEVICE)
        assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        assert payload["device"] == {"identifiers": [f"edge_{DEVICE}"], "name": f"edge {DEVICE}",
                                     "model": f"edge {__version__}", "sw_version": __version__, "manufacturer": "edge"}
        assert payload["origin"]["name"] == "edge"
        # state comes from this device's retained state and metrics; commands go to its own command topics
        for key in ("state_topic", "json_attributes_topic", "image_topic", "command_topic"):
            if key in payload:
                assert topic_matches_sub(f"edge/{DEVICE}/#", payload[key]), (key, payload[key])
        if "state_topic" in payload:
            assert payload["state_topic"] in own
        assert "results" not in json.dumps(payload)      # nothing reads the unretained stream
    components = {topic.split("/")[1] for topic, _ in found}
    assert components == {"sensor", "binary_sensor", "button", "number", "image"}
    rule_sensors = sorted(p["unique_id"] for t, p in found if "_rule_" in p["unique_id"])
    assert rule_sensors == [f"edge_{DEVICE}_street_rule_bus_here", f"edge_{DEVICE}_street_rule_door_zone"]
    assert {p["unique_id"] for _, p in found} >= {f"edge_{DEVICE}_street_count_person",
                                                  f"edge_{DEVICE}_street_count_traffic_light",
                                                  f"edge_{DEVICE}_street_frame", f"edge_{DEVICE}_street_threshold"}
    assert not any(p["unique_id"] == f"edge_{DEVICE}_pose_frame" for _, p in found)     # image only when asked


def test_buttons_and_the_number_send_valid_commands(render):
    from edge.daemon.commands import COMMAND_MODELS
    for command in ("pause", "resume", "snapshot"):
        button = config_of(f"street_{command}")
        assert button["command_topic"] == contract.command_topic(DEVICE, command)
        COMMAND_MODELS[command].model_validate(json.loads(button["payload_press"]))
    number = config_of("street_threshold")
    assert number["command_topic"] == contract.command_topic(DEVICE, "set_threshold")
    sent = json.loads(render(number["command_template"], {}, value=0.35))
    assert COMMAND_MODELS["set_threshold"].model_validate(sent).value == 0.35 and sent["pipeline"] == "street"
    assert (number["min"], number["max"]) == (0.0, 1.0)


def test_labels_are_checked():
    assert HaPipelineOptions(labels=["person", "traffic light"]).labels == ["person", "traffic light"]
    for bad in (["a b", "a_b"], [""], ["x" * 65]):
        with pytest.raises(ValueError):
            HaPipelineOptions(labels=bad)


# ---- templates against real messages -----------------------------------------------------------
@pytest.fixture(scope="module")
def render():
    jinja2 = pytest.importorskip("jinja2", reason="Jinja2 renders the templates as Home Assistant does")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)   # a missing key fails here as it warns there

    def render_(template: str, message: dict, **variables) -> str:
        payload = contract.message_json(message)
        return env.from_string(template).render(value_json=json.loads(payload), **variables).strip()
    return render_


def config_of(unique_suffix: str) -> dict:
    return next(p for _, p in messages() if p["unique_id"] == f"edge_{DEVICE}_{unique_suffix}")


def result(pipeline: str, results: list[dict]) -> dict:
    return contract.result_message(device=DEVICE, pipeline=pipeline, models=["m"], source="/in/a.jpg", seq=1,
                                   latency_ms={"pre": 1.0, "infer": 2.0, "post": 3.0}, results=results)


def state_after(pipeline: str, task: str, results: list[dict], rules=None, engine=None) -> dict:
    state = PipelineState(pipeline, task, [r.name for r in rules or ()])
    message = result(pipeline, results)
    state.record_result(message, engine.states() if engine else {})
    return state.message(DEVICE, paused=False, threshold=None)


def test_result_sensor_templates_give_the_state_home_assistant_shows(render):
    boxes = [{"label": "person", "score": 0.9, "box": [1, 2, 3, 4]}, {"label": "bus", "score": 0.8, "box": [5, 6, 7, 8]},
             {"label": "person", "score": 0.7, "box": [1, 2, 3, 4]}]
    street = state_after("street", "detection", boxes)
    objects = config_of("street_objects")
    assert render(objects["value_template"], street) == "3"
    assert json.loads(render(objects["json_attributes_template"], street)) == {
        "counts": {"person": 2, "bus": 1}, "source": "/in/a.jpg"}
    assert render(config_of("street_count_person")["value_template"], street) == "2"
    assert render(config_of("street_count_traffic_light")["value_template"], street) == "0"
    assert render(config_of("street_last_result")["value_template"], street) == street["last_result"]["ts"]
    assert render(objects["value_template"], state_after("street", "detection", [])) == "0"

    classes = [{"label": "180", "score": 0.97}, {"label": "0", "score": 0.02}]
    cls = state_after("cls", "classification", classes)
    assert render(config_of("cls_label")["value_template"], cls) == "180"
    assert json.loads(render(config_of("cls_label")["json_attributes_template"], cls))["score"] == 0.97

    lines = [{"text": "EXIT", "score": 0.99, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]},
             {"text": "x" * 300, "score": 0.89, "box": [[0, 0], [9, 0], [9, 9], [0, 9]]}]
    ocr = state_after("ocr", "ocr", lines)
    text = render(config_of("ocr_text")["value_template"], ocr)
    assert text.startswith("EXIT x") and len(text) == 255           # Home Assistant's state limit
    assert json.loads(render(config_of("ocr_text")["json_attributes_template"], ocr)) == {
        "score": 0.94, "source": "/in/a.jpg", "lines": 2}

    masks = [{"label": "person", "area_ratio": 0.4123, "box": [0, 0, 9, 9]}]
    assert float(render(config_of("portrait_area")["value_template"], state_after("portrait", "segmentation", masks))) \
        == 41.2


def test_before_any_result_and_after_an_error_templates_render_unknown_not_errors(render):
    state = PipelineState("street", "detection", ["bus_here"])
    state.record_error(contract.error_message(device=DEVICE, pipeline="street", source="/in/bad.jpg",
                                              error="truncated JPEG", seq=1))
    message = state.message(DEVICE, paused=True, threshold=0.4)
    for suffix in ("street_objects", "street_count_person", "street_last_result"):
        assert render(config_of(suffix)["value_template"], message) == "None"
    assert render(config_of("street_problem")["value_template"], message) == "ON"
    assert json.loads(render(config_of("street_problem")["json_attributes_template"], message))["source"] \
        == "/in/bad.jpg"
    assert render(config_of("street_errors")["value_template"], message) == "1"
    assert render(config_of("street_paused")["value_template"], message) == "ON"
    assert render(config_of("street_threshold")["value_template"], message) == "0.4"
    assert render(config_of("street_rule_bus_here")["value_template"], message) == "OFF"
    # a rule that is not in the message (an orphan entity's): unknown, no template error
    assert render(config_of("street_rule_door_zone")["value_template"], message) == "None"


def test_an_empty_payload_clearing_a_topic_renders_unknown_not_an_error():
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    templates = [(p["unique_id"], p[key]) for _, p in messages() for key in ("value_template", "json_attributes_template")
                 if key in p]
    assert len(templates) > 30
    for unique_id, template in templates:          # Home Assistant gives no value_json for a non-JSON payload
        out = env.from_string(template).render(value="").strip()
        assert out in ("None", "OFF", "0") or isinstance(json.loads(out), dict), (unique_id, out)


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
    # a pipeline the metrics do not know (an orphan entity of a renamed pipeline): unknown, no error
    del metrics["pipelines"]["street"]
    assert render(config_of("street_fps")["value_template"], metrics) == "None"


def test_rule_binary_sensors_follow_their_rule_in_the_state(render):
    engine = RuleEngine(RULES)
    bus = [{"label": "bus", "score": 0.9, "box": [300, 300, 400, 400]}]
    engine.update(bus, contract.utc_timestamp())
    on = state_after("street", "detection", bus, RULES, engine)
    engine.update([], contract.utc_timestamp())
    off = state_after("street", "detection", [], RULES, engine)
    bus_sensor, zone_sensor = config_of("street_rule_bus_here"), config_of("street_rule_door_zone")
    assert render(bus_sensor["value_template"], on) == bus_sensor["payload_on"]
    assert render(bus_sensor["value_template"], off) == bus_sensor["payload_off"]
    assert render(zone_sensor["value_template"], on) == "OFF"
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
