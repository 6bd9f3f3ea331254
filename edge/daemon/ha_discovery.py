"""Home Assistant MQTT discovery: retained configs that make each pipeline a set of entities.

Topics are `homeassistant/<component>/<device>/<pipeline>_<what>/config`: Home Assistant's
`<prefix>/<component>/[<node_id>/]<object_id>/config` form with the device id as node id, so the
device id is a topic level of its own and a broker ACL can confine a device's discovery messages
too (`pattern write homeassistant/+/%u/#`). Home Assistant allows only `[a-zA-Z0-9_-]` in those
two levels, so any other character (a '.' in a device id) becomes '_' there.

Every entity belongs to one Home Assistant device per edge device and is unavailable while
`edge/<device>/status` says `offline`. Result and rule entities read the pipeline's *retained*
state (`edge/<device>/<pipeline>/state`, `pipeline_state.py`), so they show the present right
after Home Assistant or the daemon restarts; diagnostics read the metrics. Buttons and the
threshold number publish the daemon's own commands (`edge/<device>/cmd/...`). Templates read
every key with `.get()`, so a message without the key renders "None" (Home Assistant's
"unknown") rather than a template error. An empty retained payload on a config topic removes
an entity; `ha_cleanup.py` does that for entities the daemon no longer has.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtimes import __version__

from . import contract

PREFIX = "homeassistant"
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")

Message = tuple[str, str, bool]


def ha_id(text: str) -> str:
    """`text` in the characters Home Assistant accepts in discovery topic levels."""
    return _NOT_ID.sub("_", text)


class HaPipelineOptions(BaseModel):
    """A pipeline's `home_assistant:` block (used with `ha_discovery: true`)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=list, max_length=50,
                              description="one count sensor per label (person, car, ...)")
    image_interval: float = Field(2.0, ge=0, le=3600,
                                  description="seconds between annotated frames for the image entity; 0: none")
    image_width: int = Field(640, ge=64, le=3840, description="the image entity's frames are at most this wide")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        ids = [ha_id(label) for label in value]
        if any(not label.strip() or len(label) > 64 for label in value):
            raise ValueError("labels are 1-64 characters")
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels must differ in letters, digits, '_' and '-': {value}")
        return value


# ---- templates (Home Assistant's Jinja: `value_json` is the parsed payload) -------------------------
# Every value and attribute template starts with this (`_Builder.config` adds it) and reads `j`: the
# payload as JSON, or {} when it is none (the empty payload that clears a retained topic, which an
# entity about to be removed may still receive).
_J = "{% set j = value_json if value_json is defined else {} %}"


def _last(expression: str) -> str:
    """A template of `expression` on the last result `r`, "None" (unknown) before any result."""
    return f"{{% set r = j.get('last_result') %}}{{{{ {expression} if r else None }}}}"


def _attributes(**fields: str) -> str:
    items = ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items())
    return "{% set r = j.get('last_result') or {} %}{{ {" + items + "} | tojson }}"


_SOURCE = "r.get('source')"
# task -> (what, name, template, extra config) of its result sensors
RESULT_SENSORS: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {
    "detection": [("objects", "objects", _last("r['count']"),
                   {"state_class": "measurement",
                    "json_attributes_template": _attributes(counts="r.get('counts')", source=_SOURCE)})],
    "keypoints": [("persons", "persons", _last("r['count']"),
                   {"state_class": "measurement",
                    "json_attributes_template": _attributes(score="r.get('score')", source=_SOURCE)})],
    "classification": [("label", "class", _last("r['label']"),
                        {"json_attributes_template": _attributes(score="r.get('score')", source=_SOURCE)})],
    "ocr": [("text", "text", _last("r.get('text', '')"),
             {"json_attributes_template": _attributes(score="r.get('score')", source=_SOURCE,
                                                      lines="r.get('count')")}),
            ("lines", "text lines", _last("r['count']"), {"state_class": "measurement"})],
    "segmentation": [("area", "area", _last("r.get('area_percent')"),
                      {"state_class": "measurement", "unit_of_measurement": "%",
                       "json_attributes_template": _attributes(source=_SOURCE)})],
}
DEFAULT_RESULT_SENSORS = [("results", "results", _last("r['count']"), {"state_class": "measurement"})]


def _metric(pipeline: str, *path: str) -> str:
    expression = f"j.get('pipelines', {{}}).get({json.dumps(pipeline)}, {{}})"
    for key in path:
        expression = f"({expression} or {{}}).get({json.dumps(key)})"
    return f"{{{{ {expression} }}}}"


def _pipeline_metric_sensors(pipeline: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        ("fps", "frames per second", _metric(pipeline, "fps"),
         {"state_class": "measurement", "unit_of_measurement": "fps"}),
        ("latency_p95", "latency p95", _metric(pipeline, "latency_ms", "total", "p95"),
         {"state_class": "measurement", "unit_of_measurement": "ms", "device_class": "duration"}),
        ("dropped_frames", "dropped frames", _metric(pipeline, "counters", "dropped_frames", "total"),
         {"state_class": "total_increasing"}),
    ]


DEVICE_METRIC_SENSORS = [
    ("cpu_load", "CPU load (1 min)", "{{ j.get('cpu', {}).get('load_1m') }}",
     {"state_class": "measurement"}),
    ("temperature", "temperature", "{{ j.get('temperature_c') }}",
     {"state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature"}),
    ("spool_depth", "spool depth", "{{ j.get('spool_depth', 0) }}", {"state_class": "measurement"}),
]
# rule type -> Home Assistant binary_sensor device class
RULE_DEVICE_CLASSES = {"presence": "presence", "region": "occupancy", "count": None}
_ON_OFF = {"payload_on": "ON", "payload_off": "OFF"}
DIAGNOSTIC = {"entity_category": "diagnostic"}


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

    def entity(self, component: str, what: str, name: str, **fields: Any) -> Message:
        payload = {"name": name, "unique_id": f"edge_{ha_id(self.device)}_{ha_id(what)}", **fields, **self.common}
        if "json_attributes_template" in payload:
            payload["json_attributes_topic"] = payload["state_topic"]
        return self.topic(component, what), contract.message_json(payload), True

    def config(self, component: str, what: str, name: str, state_topic: str, template: str,
               extra: dict[str, Any], qos: int = 1) -> Message:
        if "json_attributes_template" in extra:
            extra = {**extra, "json_attributes_template": _J + extra["json_attributes_template"]}
        return self.entity(component, what, name, state_topic=state_topic, value_template=_J + template, qos=qos,
                           **extra)


def discovery_messages(device: str, pipelines: list[dict[str, Any]], status_topic: str, *,
                       version: str = __version__, prefix: str = PREFIX) -> list[Message]:
    """Retained (topic, JSON payload, retain=True) configs for the device's and each pipeline's entities.

    A pipeline is `{"name", "task"}` and optionally `"rules"` (rule objects or dicts with name and
    type: a binary_sensor each), `"labels"` (a count sensor each) and `"image"` (True: an image
    entity showing `contract.image_topic`)."""
    build = _Builder(device, status_topic, version, prefix)
    metrics = contract.metrics_topic(device)
    messages = [build.config("sensor", f"system_{what}", name, metrics, template, {**DIAGNOSTIC, **extra}, qos=0)
                for what, name, template, extra in DEVICE_METRIC_SENSORS]
    for pipeline in pipelines:
        messages += _pipeline_entities(build, device, pipeline)
    return messages


def _pipeline_entities(build: _Builder, device: str, pipeline: dict[str, Any]) -> list[Message]:
    pname, task = pipeline["name"], pipeline.get("task", "")
    state = contract.state_topic(device, pname)
    messages = [build.config("sensor", f"{pname}_{what}", f"{pname} {name}", state, template, extra)
                for what, name, template, extra in RESULT_SENSORS.get(task, DEFAULT_RESULT_SENSORS)]
    for label in pipeline.get("labels") or ():
        messages.append(build.config(
            "sensor", f"{pname}_count_{label}", f"{pname} {label} count", state,
            _last(f"r['counts'].get({json.dumps(label)}, 0)"), {"state_class": "measurement"}))
    messages += [
        build.config("sensor", f"{pname}_last_result", f"{pname} last result", state, _last("r['ts']"),
                     {"device_class": "timestamp"}),
        build.config("binary_sensor", f"{pname}_problem", f"{pname} problem", state,
                     "{{ 'ON' if j.get('problem') else 'OFF' }}",
                     {"device_class": "problem", **_ON_OFF,
                      "json_attributes_template": "{{ (j.get('last_error') or {}) | tojson }}"}),
        build.config("sensor", f"{pname}_errors", f"{pname} errors", state, "{{ j.get('errors') }}",
                     {"state_class": "total_increasing", **DIAGNOSTIC}),
        build.config("binary_sensor", f"{pname}_paused", f"{pname} paused", state,
                     "{{ 'ON' if j.get('paused') else 'OFF' }}", {**_ON_OFF, **DIAGNOSTIC}),
    ]
    messages += _controls(build, device, pname, state)
    if pipeline.get("image"):
        messages.append(build.entity("image", f"{pname}_frame", f"{pname} frame",
                                     image_topic=contract.image_topic(device, pname), content_type="image/jpeg"))
    for what, name, template, extra in _pipeline_metric_sensors(pname):
        messages.append(build.config("sensor", f"{pname}_{what}", f"{pname} {name}", contract.metrics_topic(device),
                                     template, {**DIAGNOSTIC, **extra}, qos=0))
    for rule_name, rule_type in _rules_of(pipeline):
        messages.append(_rule_sensor(build, pname, state, rule_name, rule_type))
    return messages


def _controls(build: _Builder, device: str, pipeline: str, state: str) -> list[Message]:
    """Buttons for pause/resume/snapshot and a number for the threshold: the daemon's commands."""
    target = contract.message_json({"pipeline": pipeline})
    buttons = [build.entity("button", f"{pipeline}_{command}", f"{pipeline} {command}", qos=1,
                            command_topic=contract.command_topic(device, command), payload_press=target,
                            **({"entity_category": "config"} if command != "snapshot" else {}))
               for command in ("pause", "resume", "snapshot")]
    threshold = build.config(
        "number", f"{pipeline}_threshold", f"{pipeline} score threshold", state,
        "{{ j.get('threshold') }}",
        {"command_topic": contract.command_topic(device, "set_threshold"),
         "command_template": '{"pipeline": ' + json.dumps(pipeline) + ', "value": {{ value }}}',
         "min": 0.0, "max": 1.0, "step": 0.01, "mode": "box", "entity_category": "config"})
    return [*buttons, threshold]


def _rule_sensor(build: _Builder, pipeline: str, state: str, rule: str, rule_type: str) -> Message:
    extra: dict[str, Any] = dict(_ON_OFF)
    if RULE_DEVICE_CLASSES.get(rule_type):
        extra["device_class"] = RULE_DEVICE_CLASSES[rule_type]
    template = (f"{{% set on = j.get('rules', {{}}).get({json.dumps(rule)}) %}}"
                "{{ 'None' if on is none else ('ON' if on else 'OFF') }}")
    return build.config("binary_sensor", f"{pipeline}_rule_{rule}", f"{pipeline} {rule}", state, template, extra)


def _rules_of(pipeline: dict[str, Any]) -> list[tuple[str, str]]:
    rules = []
    for rule in pipeline.get("rules") or ():
        if isinstance(rule, dict):
            rules.append((rule["name"], rule.get("type", "")))
        else:                          # a RuleConfig model
            rules.append((rule.name, rule.type))
    for name, _type in rules:
        contract.check_topic_segment(name, "rule name")
    return rules


def removal_messages(device: str, pipelines: list[dict[str, Any]], status_topic: str, *,
                     version: str = __version__, prefix: str = PREFIX) -> list[Message]:
    """Empty retained payloads on the same topics: Home Assistant removes those entities."""
    return [(topic, "", True) for topic, _payload, _retain in
            discovery_messages(device, pipelines, status_topic, version=version, prefix=prefix)]


def config_topic_filter(device: str, prefix: str = PREFIX) -> str:
    """Every discovery config of `device` (what `edge run --ha-cleanup` looks for on the broker)."""
    return f"{prefix}/+/{ha_id(device)}/+/config"


def pipeline_entry(pipeline: Any, task: str) -> dict[str, Any]:
    """A `PipelineConfig` (whose bundle has `task`) as `discovery_messages` takes it."""
    options = pipeline.home_assistant
    return {"name": pipeline.name, "task": task, "rules": pipeline.rules, "labels": options.labels,
            "image": options.image_interval > 0}
