"""The MQTT contract of edge: topic names, payload builders and schema ids, in this one place.

Consumers depend on what is written here (and described in docs/mqtt.md, with JSON Schemas in
docs/schemas/); change a payload only together with its schema id and its schema file.
The builders need no MQTT client: `edge infer --json` prints the very same objects.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from runtimes.errors import ConfigError

TOPIC_ROOT = "edge"
RESULT_SCHEMA = "edge.result/1"
ERROR_SCHEMA = "edge.error/1"
EVENT_SCHEMA = "edge.event/1"
METRICS_SCHEMA = "edge.metrics/1"
REPLY_SCHEMA = "edge.reply/1"
STATUS_SCHEMA = "edge.status/1"
STATE_SCHEMA = "edge.state/1"
SOURCE_SCHEMA = "edge.source/1"
OTA_SCHEMA = "edge.ota/1"
# Where each schema id is described, relative to the repository root (not shipped to devices).
SCHEMA_FILES = {RESULT_SCHEMA: "docs/schemas/result.schema.json",
                ERROR_SCHEMA: "docs/schemas/error.schema.json",
                EVENT_SCHEMA: "docs/schemas/event.schema.json",
                METRICS_SCHEMA: "docs/schemas/metrics.schema.json",
                REPLY_SCHEMA: "docs/schemas/reply.schema.json",
                STATUS_SCHEMA: "docs/schemas/status.schema.json",
                STATE_SCHEMA: "docs/schemas/state.schema.json",
                SOURCE_SCHEMA: "docs/schemas/source.schema.json",
                OTA_SCHEMA: "docs/schemas/ota.schema.json"}

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
# Device-level topic words: a pipeline with one of these names would put its topics inside them
# (pipeline "cmd" -> edge/<device>/cmd/results, which is the command topic "results").
RESERVED_PIPELINE_NAMES = frozenset({"cmd", "status", "metrics", "ota"})
COMMAND_LEVEL = "cmd"

# A topic level must not hold MQTT's separators or wildcards; a conservative charset also keeps
# device ids usable as file names and in shell scripts.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_ERROR_CHARS = 500


def check_topic_segment(value: str, what: str) -> str:
    """Return `value` if it can be one topic level, else raise ConfigError naming `what`."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ConfigError(f"'{value}' is not a usable {what}: use 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit", field=what)
    return value


def check_pipeline_name(value: str) -> str:
    """A topic level that is not one of the device's own topic words."""
    check_topic_segment(value, "pipeline")
    if value in RESERVED_PIPELINE_NAMES:
        raise ConfigError(f"'{value}' cannot name a pipeline: {', '.join(sorted(RESERVED_PIPELINE_NAMES))} "
                          "are device topics", field="pipeline")
    return value


def status_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{device}/status"


def results_topic(device: str, pipeline: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{pipeline}/results"


def errors_topic(device: str, pipeline: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{pipeline}/errors"


def events_topic(device: str, pipeline: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{pipeline}/events"


def state_topic(device: str, pipeline: str) -> str:
    """The pipeline's present (`edge.state/1`), retained."""
    return f"{TOPIC_ROOT}/{device}/{pipeline}/state"


def image_topic(device: str, pipeline: str) -> str:
    """The last annotated frame as JPEG bytes, retained (with Home Assistant discovery on)."""
    return f"{TOPIC_ROOT}/{device}/{pipeline}/image"


def metrics_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{device}/metrics"


def status_info_topic(device: str) -> str:
    """The retained JSON description; beside (not instead of) the plain online/offline status topic."""
    return f"{TOPIC_ROOT}/{device}/status/info"


def command_topic(device: str, name: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{COMMAND_LEVEL}/{check_topic_segment(name, 'command')}"


def command_filter(device: str) -> str:
    """What the daemon subscribes to for its commands (one level: replies live one level deeper)."""
    return f"{TOPIC_ROOT}/{device}/{COMMAND_LEVEL}/+"


def reply_topic(device: str, name: str) -> str:
    return f"{command_topic(device, name)}/reply"


def command_name(device: str, topic: str) -> str | None:
    """`edge/<device>/cmd/<name>` -> name; None for any other topic (replies included)."""
    prefix = f"{TOPIC_ROOT}/{device}/{COMMAND_LEVEL}/"
    if not topic.startswith(prefix):
        return None
    name = topic[len(prefix):]
    return name if name and "/" not in name else None


def ota_topic(device: str) -> str:
    """The device's update state (`edge.ota/1`), retained; also says which group the device is in."""
    return f"{TOPIC_ROOT}/{device}/ota"


def ota_want_topic(device: str) -> str:
    """The device asks for chunks of an offered package here (JSON: offer id and chunk indexes)."""
    return f"{TOPIC_ROOT}/{device}/ota/want"


def ota_chunk_topic(device: str, offer: str, index: int) -> str:
    """One chunk of an offered package, sent by the operator: a 32-byte sha256 of the data, then the data."""
    return f"{TOPIC_ROOT}/{device}/ota/chunk/{check_topic_segment(offer, 'offer')}/{int(index)}"


def ota_chunk_filter(device: str) -> str:
    return f"{TOPIC_ROOT}/{device}/ota/chunk/#"


def ota_message(*, device: str, group: str | None, state: str, offer: dict[str, Any] | None,
                bundles: dict[str, dict[str, str | None]], progress: dict[str, int] | None = None,
                error: str | None = None, timings: dict[str, float] | None = None,
                message_id: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """The retained update state of a device (`edge.ota/1`), built by `edge.ota.agent`."""
    message: dict[str, Any] = {"schema": OTA_SCHEMA, "id": message_id or new_message_id(),
                               "ts": ts or utc_timestamp(), "device": device, "group": group, "state": state,
                               "offer": offer, "bundles": bundles}
    if progress is not None:
        message["progress"] = progress
    if error is not None:
        message["error"] = one_line(error)
    if timings:
        message["timings"] = timings
    return message


def utc_timestamp(when: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a 'Z', e.g. 2025-01-31T12:00:00.123Z."""
    when = when or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_message_id() -> str:
    return uuid.uuid4().hex


def result_message(*, device: str, pipeline: str, models: list[str], source: str, seq: int,
                   latency_ms: dict[str, float], results: list[dict[str, Any]],
                   message_id: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """One image's results (`edge.result/1`); `latency_ms` is Timings.as_dict(), `results` TaskOutput.results."""
    return {
        "schema": RESULT_SCHEMA,
        "id": message_id or new_message_id(),
        "seq": seq,
        "ts": ts or utc_timestamp(),
        "device": device,
        "pipeline": pipeline,
        "model": list(models),
        "source": source,
        "latency_ms": {stage: latency_ms[stage] for stage in ("pre", "infer", "post")},
        "results": results,
    }


def error_message(*, device: str, pipeline: str, source: str, error: str, seq: int | None = None,
                  message_id: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """An input that gave no result (`edge.error/1`); `seq` is the input's number when there was one."""
    message: dict[str, Any] = {"schema": ERROR_SCHEMA, "id": message_id or new_message_id()}
    if seq is not None:
        message["seq"] = seq
    message.update({"ts": ts or utc_timestamp(), "device": device, "pipeline": pipeline,
                    "source": source, "error": one_line(error)})
    return message


def event_message(*, device: str, pipeline: str, event: dict[str, Any], seq: int | None = None,
                  source: str | None = None, message_id: str | None = None,
                  ts: str | None = None) -> dict[str, Any]:
    """A rule's state change (`edge.event/1`); `event` is what `RuleEngine.update` returned.

    `seq`/`source` name the input that confirmed the change (absent when there was none)."""
    body = dict(event)
    when = ts or body.pop("ts", None) or utc_timestamp()
    body.pop("ts", None)
    message: dict[str, Any] = {"schema": EVENT_SCHEMA, "id": message_id or new_message_id(), "ts": when,
                               "device": device, "pipeline": pipeline}
    if seq is not None:
        message["seq"] = seq
    if source is not None:
        message["source"] = source
    message.update(body)
    return message


def source_message(*, device: str, pipeline: str, source: str, change: str, connected: bool, reconnects: int,
                   problem: str | None = None, reason: str | None = None, config_error: bool = False,
                   retry_s: float | None = None, down_s: float | None = None, message_id: str | None = None,
                   ts: str | None = None) -> dict[str, Any]:
    """A live source's connection changed (`edge.source/1`, on the events topic): connected, lost, failed
    (an attempt failed for a new reason), reconnected. Lost and failed say why and when the next try is."""
    message: dict[str, Any] = {"schema": SOURCE_SCHEMA, "id": message_id or new_message_id(),
                               "ts": ts or utc_timestamp(), "device": device, "pipeline": pipeline, "source": source,
                               "change": change, "connected": connected, "reconnects": reconnects}
    if problem is not None:
        message.update(problem=problem, reason=one_line(reason or problem), config_error=config_error,
                       retry_s=retry_s)
    if down_s is not None:
        message["down_s"] = down_s
    return message


def metrics_message(*, device: str, snapshot: dict[str, Any], message_id: str | None = None,
                    ts: str | None = None) -> dict[str, Any]:
    """Every N seconds (`edge.metrics/1`); `snapshot` is `MetricsCollector.snapshot(...)`."""
    return {"schema": METRICS_SCHEMA, "id": message_id or new_message_id(), "ts": ts or utc_timestamp(),
            "device": device, **snapshot}


def reply_message(*, command: str, ok: bool, result: dict[str, Any] | None = None, error: str | None = None,
                  request_id: str | None = None, message_id: str | None = None,
                  ts: str | None = None) -> dict[str, Any]:
    """The answer to one command (`edge.reply/1`): `result` when ok, else a one-line `error`."""
    message: dict[str, Any] = {"schema": REPLY_SCHEMA, "id": message_id or new_message_id(),
                               "ts": ts or utc_timestamp(), "command": command, "ok": ok}
    if ok:
        message["result"] = result if result is not None else {}
    else:
        message["error"] = one_line(error or "failed")
    message["request_id"] = request_id
    return message


def state_message(*, device: str, pipeline: str, task: str, paused: bool, threshold: float | None,
                  rules: dict[str, bool], last_result: dict[str, Any] | None, last_error: dict[str, Any] | None,
                  problem: bool, errors: int, message_id: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """The retained present of one pipeline (`edge.state/1`); built by `pipeline_state.PipelineState`."""
    return {"schema": STATE_SCHEMA, "id": message_id or new_message_id(), "ts": ts or utc_timestamp(),
            "device": device, "pipeline": pipeline, "task": task, "paused": paused, "threshold": threshold,
            "rules": rules, "last_result": last_result, "last_error": last_error, "problem": problem,
            "errors": errors}


# What a pipeline entry of the status description may say (name and task are required).
STATUS_PIPELINE_FIELDS = ("name", "task", "bundle", "models", "source", "connection", "paused", "threshold", "rules",
                          "runs", "chosen")


def status_description(device: str, version: str, profile: str | None, pipelines: list[dict[str, Any]],
                       *, started: str | None = None, message_id: str | None = None,
                       ts: str | None = None) -> dict[str, Any]:
    """The retained JSON on `status_info_topic(device)` (`edge.status/1`): what this device runs.

    Republish it whenever it changes (pause/resume, a reload, a new threshold)."""
    entries = []
    for pipeline in pipelines:
        unknown = sorted(set(pipeline) - set(STATUS_PIPELINE_FIELDS))
        if unknown or "name" not in pipeline or "task" not in pipeline:
            raise ValueError(f"status pipeline entry needs name and task and takes only "
                             f"{', '.join(STATUS_PIPELINE_FIELDS)}; got {sorted(pipeline)}")
        entries.append({key: pipeline[key] for key in STATUS_PIPELINE_FIELDS if key in pipeline})
    message: dict[str, Any] = {"schema": STATUS_SCHEMA, "id": message_id or new_message_id(),
                               "ts": ts or utc_timestamp(), "device": device, "version": version,
                               "profile": profile, "pipelines": entries}
    if started is not None:
        message["started"] = started
    return message


def one_line(text: str) -> str:
    """Consumers show `error` in a table row: first non-empty line, bounded length."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= _ERROR_CHARS else line[:_ERROR_CHARS - 3] + "..."


def _plain(value: Any) -> Any:
    # Task results may carry numpy scalars or arrays; both know how to become plain Python.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def message_json(message: dict[str, Any], indent: int | None = None) -> str:
    """The message as JSON text (UTF-8 text kept readable, NaN refused since JSON has none)."""
    separators = None if indent else (",", ":")
    return json.dumps(message, ensure_ascii=False, allow_nan=False, default=_plain,
                      indent=indent, separators=separators)


def encode_message(message: dict[str, Any]) -> bytes:
    """The MQTT payload of a message."""
    return message_json(message).encode("utf-8")
