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
# Where each schema id is described, relative to the repository root (not shipped to devices).
SCHEMA_FILES = {RESULT_SCHEMA: "docs/schemas/result.schema.json",
                ERROR_SCHEMA: "docs/schemas/error.schema.json"}

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"

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


def status_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{device}/status"


def results_topic(device: str, pipeline: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{pipeline}/results"


def errors_topic(device: str, pipeline: str) -> str:
    return f"{TOPIC_ROOT}/{device}/{pipeline}/errors"


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
