"""The MQTT contract, version 1: topic names, schema files, and every message kind checked against
its JSON Schema — the results of each real task family included, and the messages as a real
broker delivers them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import write_fp32_profile
from paho.mqtt.client import topic_matches_sub

from edge.daemon import contract
from edge.daemon.metrics import MetricsCollector
from edge.daemon.rules import RuleEngine, parse_rules
from runtimes.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-07"



def validator(schema_id: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema_id]).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def item_validator(definition: str) -> jsonschema.Draft202012Validator:
    """One result item against one `$defs` entry of the result schema."""
    defs = validator(contract.RESULT_SCHEMA).schema["$defs"]
    return jsonschema.Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{definition}"})


def check(message: dict) -> dict:
    """Validate the message as a consumer receives it (JSON text), return what was received."""
    received = json.loads(contract.message_json(message))
    validator(received["schema"]).validate(received)
    return received


# ---- topics ------------------------------------------------------------------------------------
def test_topics_of_a_device_all_live_under_its_own_prefix():
    topics = [contract.status_topic(DEVICE), contract.status_info_topic(DEVICE), contract.metrics_topic(DEVICE),
              contract.results_topic(DEVICE, "door"), contract.events_topic(DEVICE, "door"),
              contract.errors_topic(DEVICE, "door"), contract.command_topic(DEVICE, "pause"),
              contract.reply_topic(DEVICE, "pause")]
    assert all(topic_matches_sub(f"edge/{DEVICE}/#", t) for t in topics)
    assert len(set(topics)) == len(topics)
    # an ACL `pattern readwrite edge/%u/#` confines all of it; another device's prefix matches none
    assert not any(topic_matches_sub("edge/cam-08/#", t) for t in topics)


def test_the_command_filter_takes_commands_but_not_replies_or_other_devices():
    filter_ = contract.command_filter(DEVICE)
    assert topic_matches_sub(filter_, contract.command_topic(DEVICE, "set_threshold"))
    assert not topic_matches_sub(filter_, contract.reply_topic(DEVICE, "set_threshold"))
    assert not topic_matches_sub(filter_, contract.command_topic("cam-08", "pause"))
    assert contract.command_name(DEVICE, contract.command_topic(DEVICE, "reload")) == "reload"
    assert contract.command_name(DEVICE, contract.reply_topic(DEVICE, "reload")) is None
    assert contract.command_name(DEVICE, contract.results_topic(DEVICE, "p")) is None


@pytest.mark.parametrize("name", ["cmd", "status", "metrics"])
def test_a_pipeline_cannot_take_the_name_of_a_device_topic(name):
    with pytest.raises(ConfigError, match="cannot name a pipeline"):
        contract.check_pipeline_name(name)
    # the same word is a fine device id or rule name
    assert contract.check_topic_segment(name, "device_id") == name


@pytest.mark.parametrize("name", ["a/b", "+", "#", "", "../x", "x" * 65, "näme"])
def test_command_names_must_be_one_plain_topic_level(name):
    with pytest.raises(ConfigError):
        contract.command_topic(DEVICE, name)


# ---- schema files ------------------------------------------------------------------------------
def test_every_schema_file_is_a_valid_2020_12_schema_named_after_its_id():
    assert set(contract.SCHEMA_FILES) == {contract.RESULT_SCHEMA, contract.ERROR_SCHEMA, contract.EVENT_SCHEMA,
                                          contract.METRICS_SCHEMA, contract.REPLY_SCHEMA, contract.STATUS_SCHEMA,
                                          contract.STATE_SCHEMA, contract.SOURCE_SCHEMA, contract.OTA_SCHEMA}
    for schema_id, path in contract.SCHEMA_FILES.items():
        schema = json.loads((REPO_ROOT / path).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == schema_id
        assert schema["properties"]["schema"] == {"const": schema_id}


def test_documentation_names_every_topic_and_schema():
    doc = (REPO_ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    for schema_id, path in contract.SCHEMA_FILES.items():
        assert schema_id in doc and Path(path).name in doc
    for topic in ("edge/<device>/status/info", "edge/<device>/<pipeline>/events", "edge/<device>/metrics",
                  "edge/<device>/cmd/<name>", "edge/<device>/cmd/<name>/reply", "homeassistant/"):
        assert topic in doc, topic


# ---- messages ----------------------------------------------------------------------------------
def test_status_description_validates_and_refuses_unknown_pipeline_fields():
    received = check(contract.status_description(
        DEVICE, "0.1.0", "rpi5",
        [{"name": "door", "task": "detection", "bundle": "picodet_s_320", "models": ["picodet"],
          "source": "/dev/video0", "paused": False, "threshold": 0.5, "rules": ["person_at_door"]}],
        started=contract.utc_timestamp()))
    assert received["pipelines"][0]["rules"] == ["person_at_door"]
    with pytest.raises(ValueError, match="takes only"):
        contract.status_description(DEVICE, "0.1.0", None, [{"name": "door", "task": "detection", "fps": 3}])


def test_events_from_the_rule_engine_validate_for_each_rule_type():
    engine = RuleEngine(parse_rules([
        {"name": "bus", "type": "presence", "label": "bus"},
        {"name": "crowd", "type": "count", "direction": "above", "value": 1},
        {"name": "few", "type": "count", "label": "person", "direction": "below", "value": 3},
        {"name": "door", "type": "region", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]],
         "coordinates": "normalized"}]))
    frame = [{"label": "bus", "score": 0.9, "box": [300.0, 50.0, 600.0, 400.0]},
             {"label": "person", "score": 0.8, "box": [20.0, 100.0, 120.0, 400.0]}]
    events = engine.update(frame, contract.utc_timestamp(), image_size=(640, 480))
    events += engine.update([], contract.utc_timestamp(), image_size=(640, 480))
    received = [check(contract.event_message(device=DEVICE, pipeline="door", event=e, seq=n, source="x.jpg"))
                for n, e in enumerate(events, 1)]
    assert {(m["rule"], m["change"]) for m in received} >= {
        ("bus", "appeared"), ("bus", "disappeared"), ("crowd", "above"), ("crowd", "cleared"),
        ("few", "below"), ("door", "entered"), ("door", "left")}


def test_metrics_messages_validate_with_and_without_frames():
    collector = MetricsCollector()
    collector.add_pipeline("door")
    check(contract.metrics_message(device=DEVICE, snapshot=collector.snapshot({"spool_depth": 0})))
    collector.record({"pre": 1.5, "infer": 20.0, "post": 2.0}, pipeline="door")
    collector.count("dropped_frames", 2, pipeline="door")
    collector.count("spool_dropped")
    received = check(contract.metrics_message(device=DEVICE, snapshot=collector.snapshot(
        {"spool_depth": 12, "spool_capacity": 100000, "unacked": 3, "connected": True, "uptime_s": 61.5})))
    assert received["pipelines"]["door"]["counters"]["dropped_frames"] == {"interval": 2, "total": 2}


def test_replies_validate_and_an_error_reply_carries_no_result():
    check(contract.reply_message(command="pause", ok=True, result={"paused": ["door"]}, request_id="r-1"))
    received = check(contract.reply_message(command="reload", ok=False, error="no bundle 'x'\nsecond line"))
    assert received["error"] == "no bundle 'x'" and "result" not in received
    bad = contract.reply_message(command="pause", ok=True, result={})
    bad["error"] = "both"
    with pytest.raises(jsonschema.ValidationError):
        validator(contract.REPLY_SCHEMA).validate(bad)


# ---- the result items of every task family, from real models ----------------------------------
FAMILIES = {   # bundle name -> (export(s) under shared/models, picture)
    "detection": (["PP-PicoDet/picodet_s_320_coco/model.onnx"], "coco_bus.jpg"),
    "keypoints": (["PP-PicoDet/picodet_s_320_coco/model.onnx", "PP-TinyPose/tinypose_128x96/model.onnx"],
                  "det_hrnet_demo.jpg"),
    "segmentation": (["PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224/model.onnx"], "seg_humanseg_demo.jpg"),
    "classification": (["PP-LCNet/PPLCNet_x1_0_text_image_orientation"], "cls_img_rot180_demo.jpg"),
}


def convert_fp32(shared_dir: Path, exports: list[str], out: Path) -> Path:
    """The real `edge convert` of official exports into an ONNX FP32 bundle (about a second each)."""
    profile = write_fp32_profile(out.parent)
    convert = subprocess.run(
        [sys.executable, "-m", "edge", "convert", *(str(shared_dir / "models" / e) for e in exports),
         "--profile", str(profile), "--val", str(shared_dir / "images"), "-o", str(out), "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if convert.returncode != 0:
        pytest.fail(f"edge convert failed: {convert.stderr[-1500:]}", pytrace=False)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_real_results_of_each_task_family_match_their_schema_item(family, shared_dir, tmp_path):
    exports, picture = FAMILIES[family]
    bundle = convert_fp32(shared_dir, exports, tmp_path / family)
    from runtimes.bundle import Bundle
    from runtimes.image import read_image
    from runtimes.tasks import load_task

    task = load_task(Bundle.open(bundle))
    output = task(read_image(shared_dir / "images" / picture))
    assert output.results, f"{family}: no results on {picture}"
    received = check(contract.result_message(
        device=DEVICE, pipeline=family, models=task.models, source=picture, seq=1,
        latency_ms=output.timings.as_dict(), results=output.results))
    for item in received["results"]:     # each item fits its own family's definition, not just any
        item_validator(family).validate(item)


def test_ocr_results_match_the_ocr_line_item(ocr_bundle_dir, shared_dir):
    from runtimes.bundle import Bundle
    from runtimes.image import read_image
    from runtimes.tasks import load_task

    task = load_task(Bundle.open(ocr_bundle_dir))
    output = task(read_image(shared_dir / "images" / "ocr_word_ch_1.jpg"))
    received = check(contract.result_message(device=DEVICE, pipeline="ocr", models=task.models, source="a.jpg",
                                             seq=1, latency_ms=output.timings.as_dict(), results=output.results))
    for item in received["results"]:
        item_validator("ocr_line").validate(item)


def test_a_result_item_of_no_known_shape_is_refused():
    message = contract.result_message(device=DEVICE, pipeline="p", models=["m"], source="s", seq=1,
                                      latency_ms={"pre": 1, "infer": 1, "post": 1},
                                      results=[{"label": "bus", "score": 0.9, "box": [1, 2, 3]}])
    with pytest.raises(jsonschema.ValidationError):
        check(message)


# ---- through a real broker -------------------------------------------------------------------
def test_retained_status_description_reaches_a_late_subscriber_beside_the_plain_status(mqtt_broker):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{DEVICE}")
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        description = contract.status_description(DEVICE, "0.1.0", "x86-vnni", [{"name": "door", "task": "detection"}])
        infos = [client.publish(contract.status_topic(DEVICE), contract.STATUS_ONLINE, qos=1, retain=True),
                 client.publish(contract.status_info_topic(DEVICE), contract.encode_message(description),
                                qos=1, retain=True)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert mqtt_broker.retained(contract.status_topic(DEVICE)).text == "online"
    info = mqtt_broker.retained(contract.status_info_topic(DEVICE))
    assert info.retain and check(info.json())["pipelines"] == [{"name": "door", "task": "detection"}]
