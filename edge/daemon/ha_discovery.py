"""Home Assistant MQTT discovery: retained configs that make each pipeline show up as sensors.

Topics are `homeassistant/<component>/<device>/<pipeline>_<what>/config`: Home Assistant's
`<prefix>/<component>/[<node_id>/]<object_id>/config` form with the device id as node id, so the
device id is a topic level of its own and a broker ACL can confine a device's discovery messages
too (`pattern write homeassistant/+/%u/#`). Home Assistant allows only `[a-zA-Z0-9_-]` in those
two levels, so any other character (a '.' in a device id) becomes '_' there.

Every entity is unavailable while `edge/<device>/status` says `offline`, reads its state from
the contract's topics (results, events, metrics) through a `value_template`, and belongs to one
Home Assistant device per edge device. An empty retained payload on the same topic removes an
entity (`removal_messages`).
"""
from __future__ import annotations

import re
from typing import Any

from runtimes import __version__

from . import contract

PREFIX = "homeassistant"
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")

Message = tuple[str, str, bool]


def ha_id(text: str) -> str:
    """`text` in the characters Home Assistant accepts in discovery topic levels."""
    return _NOT_ID.sub("_", text)


# ---- what each task's results say, as (what, name, template, extra config) ---------------------
_COUNT = "{{ value_json.results | length }}"
_LABELS = "{{ {'labels': value_json.results | map(attribute='label') | list, 'source': value_json.source} | tojson }}"
RESULT_SENSORS: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {
    "detection": [("objects", "objects", _COUNT,
                   {"state_class": "measurement", "json_attributes_template": _LABELS})],
    "keypoints": [("persons", "persons", _COUNT,
                   {"state_class": "measurement", "json_attributes_template": _LABELS})],
    "classification": [("label", "class",
                        "{{ value_json.results[0].label if value_json.results else 'none' }}",
                        {"json_attributes_template":
                         "{{ {'score': value_json.results[0].score if value_json.results else none} | tojson }}"})],
    "ocr": [("text", "text",
             "{{ (value_json.results | map(attribute='text') | join(' '))[:255] }}", {}),
            ("lines", "text lines", _COUNT, {"state_class": "measurement"})],
    "segmentation": [("area", "area",
                      "{{ ((value_json.results | map(attribute='area_ratio') | sum) * 100) | round(1) }}",
                      {"state_class": "measurement", "unit_of_measurement": "%"})],
}
DEFAULT_RESULT_SENSORS = [("results", "results", _COUNT, {"state_class": "measurement"})]


def _pipeline_metric_sensors(pipeline: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    base = f"value_json.pipelines['{pipeline}']"
    return [
        ("fps", "frames per second", f"{{{{ {base}.fps }}}}",
         {"state_class": "measurement", "unit_of_measurement": "fps"}),
        ("latency_p95", "latency p95", f"{{{{ {base}.latency_ms.total.p95 }}}}",
         {"state_class": "measurement", "unit_of_measurement": "ms", "device_class": "duration"}),
        ("dropped_frames", "dropped frames", f"{{{{ {base}.counters.dropped_frames.total }}}}",
         {"state_class": "total_increasing"}),
    ]


DEVICE_METRIC_SENSORS = [
    ("cpu_load", "CPU load (1 min)", "{{ value_json.cpu.load_1m }}", {"state_class": "measurement"}),
    ("temperature", "temperature", "{{ value_json.temperature_c }}",
     {"state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature"}),
    ("spool_depth", "spool depth", "{{ value_json.spool_depth if value_json.spool_depth is defined else 0 }}",
     {"state_class": "measurement"}),
]
# rule type -> Home Assistant binary_sensor device class
RULE_DEVICE_CLASSES = {"presence": "presence", "region": "occupancy", "count": None}


class _Builder:
    """Shared parts of every config of one device."""

    def __init__(self, device: str, status_topic: str, version: str, prefix: str):
        self.device, self.prefix = device, prefix
        self.common = {
            "availability_topic": status_topic,
            "payload_available": contract.STATUS_ONLINE,
            "payload_not_available": contract.STATUS_OFFLINE,
            "device": {"identifiers": [f"edge_{ha_id(device)}"], "name": f"edge {device}",
                       "model": f"edge {version}", "sw_version": version, "manufacturer": "edge"},
            "origin": {"name": "edge", "sw_version": version},
        }

    def topic(self, component: str, what: str) -> str:
        return f"{self.prefix}/{component}/{ha_id(self.device)}/{ha_id(what)}/config"

    def config(self, component: str, what: str, name: str, state_topic: str, template: str,
               extra: dict[str, Any], qos: int = 1) -> Message:
        payload = {"name": name, "unique_id": f"edge_{ha_id(self.device)}_{ha_id(what)}",
                   "state_topic": state_topic, "value_template": template, "qos": qos, **extra, **self.common}
        if "json_attributes_template" in payload:
            payload["json_attributes_topic"] = state_topic
        return self.topic(component, what), contract.message_json(payload), True


def discovery_messages(device: str, pipelines: list[dict[str, Any]], status_topic: str, *,
                       version: str = __version__, prefix: str = PREFIX) -> list[Message]:
    """Retained (topic, JSON payload, retain=True) configs for the device's and each pipeline's sensors.

    A pipeline is `{"name", "task"}` and optionally `"rules"`: rule objects or dicts with name and
    type, each becoming a binary_sensor that follows the rule's events."""
    build = _Builder(device, status_topic, version, prefix)
    metrics = contract.metrics_topic(device)
    messages = [build.config("sensor", f"system_{what}", name, metrics, template,
                             {"entity_category": "diagnostic", **extra}, qos=0)
                for what, name, template, extra in DEVICE_METRIC_SENSORS]
    for pipeline in pipelines:
        pname, task = pipeline["name"], pipeline.get("task", "")
        results = contract.results_topic(device, pname)
        for what, name, template, extra in RESULT_SENSORS.get(task, DEFAULT_RESULT_SENSORS):
            messages.append(build.config("sensor", f"{pname}_{what}", f"{pname} {name}", results, template, extra))
        for what, name, template, extra in _pipeline_metric_sensors(pname):
            messages.append(build.config("sensor", f"{pname}_{what}", f"{pname} {name}", metrics, template,
                                         {"entity_category": "diagnostic", **extra}, qos=0))
        for rule_name, rule_type in _rules_of(pipeline):
            messages.append(_rule_sensor(build, device, pname, rule_name, rule_type))
    return messages


def _rule_sensor(build: _Builder, device: str, pipeline: str, rule: str, rule_type: str) -> Message:
    # Events of the pipeline's other rules render empty, which Home Assistant ignores.
    template = (f"{{% if value_json.rule == '{rule}' %}}"
                "{{ 'ON' if value_json.active else 'OFF' }}{% endif %}")
    extra: dict[str, Any] = {"payload_on": "ON", "payload_off": "OFF"}
    if RULE_DEVICE_CLASSES.get(rule_type):
        extra["device_class"] = RULE_DEVICE_CLASSES[rule_type]
    return build.config("binary_sensor", f"{pipeline}_rule_{rule}", f"{pipeline} {rule}",
                        contract.events_topic(device, pipeline), template, extra)


def _rules_of(pipeline: dict[str, Any]) -> list[tuple[str, str]]:
    rules = []
    for rule in pipeline.get("rules") or ():
        if isinstance(rule, dict):
            rules.append((rule["name"], rule.get("type", "")))
        else:                          # a RuleConfig model
            rules.append((rule.name, rule.type))
    for name, _type in rules:
        contract.check_topic_segment(name, "rule name")     # it is quoted inside a template
    return rules


def removal_messages(device: str, pipelines: list[dict[str, Any]], status_topic: str, *,
                     version: str = __version__, prefix: str = PREFIX) -> list[Message]:
    """Empty retained payloads on the same topics: Home Assistant removes those entities."""
    return [(topic, "", True) for topic, _payload, _retain in
            discovery_messages(device, pipelines, status_topic, version=version, prefix=prefix)]
