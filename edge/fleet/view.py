"""What the operator knows about each device, built from the device's retained MQTT topics.

Each device says what it is on topics the fleet view only reads (docs/mqtt.md):
`edge/<id>/status` (online/offline, the last will), `edge/<id>/status/info` (`edge.status/1`),
`edge/<id>/metrics` (`edge.metrics/1`, retained) and `edge/<id>/ota` (update progress, JSON with at
least `state`, written by the OTA side). `Fleet.update` files one message under its device; a topic
kind is read by the one function registered for it in `READERS`. A payload that cannot be read is
noted on the device (`problems`), never raised: one bad device must not hide the rest of the fleet.
An empty payload is a cleared retained topic and forgets what that topic had said.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..daemon import contract


def topic_filters(devices: list[str] | None = None) -> list[str]:
    """What to subscribe to: every device (`+`), or only the named ones.

    Naming devices matters on brokers that send retained messages only to exact topic filters
    (RabbitMQ's MQTT plugin): there the `+` filters deliver live messages but no retained ones."""
    ids = devices or ["+"]
    return [f"{contract.TOPIC_ROOT}/{device}/{kind}" for device in ids for kind in READERS]


@dataclass
class DeviceView:
    """One device as its retained topics describe it."""

    device: str
    status: str = "unknown"                          # online | offline | unknown (no status seen)
    info: dict[str, Any] | None = None               # edge.status/1
    metrics: dict[str, Any] | None = None            # edge.metrics/1
    ota: dict[str, Any] | None = None
    last_seen: str | None = None                     # newest `ts` of any message from the device
    problems: dict[str, str] = field(default_factory=dict)   # topic kind -> why its payload was not read

    def row(self) -> dict[str, Any]:
        """The device as one flat JSON object (`edge fleet ls --json`, one per device)."""
        info, metrics, ota = self.info or {}, self.metrics or {}, self.ota or {}
        pipelines = [{key: p.get(key) for key in ("name", "task", "bundle", "paused")}
                     for p in info.get("pipelines", [])]
        return {
            "device": self.device,
            "status": self.status,
            "version": info.get("version"),
            "profile": info.get("profile"),
            "pipelines": pipelines,
            "bundles": sorted({p["bundle"] for p in pipelines if isinstance(p.get("bundle"), str)}),
            "group": ota.get("group", info.get("group")),
            "slots": _slots(ota.get("bundles")),
            "fps": _number(metrics.get("fps")),
            "spool_depth": _number(metrics.get("spool_depth")),
            "broker_connected": metrics.get("connected"),
            "ota_state": ota.get("state"),
            "ota_progress": _percent(ota.get("progress")),
            "ota_error": ota.get("error"),
            "ota": self.ota,
            "last_seen": self.last_seen,
            "problems": dict(self.problems),
        }


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _slots(bundles: Any) -> dict[str, dict[str, Any]]:
    """edge.ota/1 `bundles`: name -> {active, standby} versions (the A/B slots); {} when not said."""
    if not isinstance(bundles, dict):
        return {}
    return {name: {"active": s.get("active"), "standby": s.get("standby")}
            for name, s in sorted(bundles.items()) if isinstance(s, dict)}


def _percent(progress: Any) -> float | None:
    """edge.ota/1 `progress` {bytes, total} as a percentage of the package downloaded."""
    done, total = (_number(progress.get(k)) for k in ("bytes", "total")) if isinstance(progress, dict) else (None, None)
    return round(100.0 * done / total, 1) if done is not None and total else None


class Fleet:
    """Every device seen so far, by id."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceView] = {}
        self.messages = 0

    def update(self, topic: str, payload: bytes) -> str | None:
        """File one message; the device id it concerned, or None for a topic that is not ours."""
        parts = topic.split("/", 2)
        if len(parts) != 3 or parts[0] != contract.TOPIC_ROOT or parts[2] not in READERS:
            return None
        device, kind = parts[1], parts[2]
        view = self.devices.setdefault(device, DeviceView(device))
        self.messages += 1
        view.problems.pop(kind, None)
        try:
            READERS[kind](view, payload)
        except ValueError as err:
            view.problems[kind] = str(err)
        return device

    def rows(self) -> list[dict[str, Any]]:
        return [self.devices[name].row() for name in sorted(self.devices)]


def _json_object(payload: bytes, what: str) -> dict[str, Any] | None:
    """The payload as a JSON object; None for an empty (cleared) payload; ValueError otherwise."""
    if not payload:
        return None
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _seen(view: DeviceView, message: dict[str, Any] | None) -> None:
    stamp = message.get("ts") if message else None
    if isinstance(stamp, str) and (view.last_seen is None or _when(stamp) > _when(view.last_seen)):
        view.last_seen = stamp


def _when(stamp: str) -> datetime:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


def _read_status(view: DeviceView, payload: bytes) -> None:
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        view.status = "unknown"
    elif text in (contract.STATUS_ONLINE, contract.STATUS_OFFLINE):
        view.status = text
    else:
        view.status = "unknown"
        raise ValueError(f"status says '{text[:40]}', not online or offline")


def _read_info(view: DeviceView, payload: bytes) -> None:
    view.info = None
    info = _json_object(payload, "status/info")
    if info is None:
        return
    if info.get("schema") != contract.STATUS_SCHEMA:
        raise ValueError(f"status/info has schema {info.get('schema')!r}, this edge reads {contract.STATUS_SCHEMA}")
    pipelines = info.get("pipelines")
    if not isinstance(pipelines, list) or not all(isinstance(p, dict) for p in pipelines):
        raise ValueError("status/info has no list of pipelines")
    view.info = info
    _seen(view, info)


def _read_metrics(view: DeviceView, payload: bytes) -> None:
    view.metrics = _json_object(payload, "metrics")
    _seen(view, view.metrics)


def _read_ota(view: DeviceView, payload: bytes) -> None:
    view.ota = None
    ota = _json_object(payload, "ota")
    if ota is not None and "state" not in ota:
        raise ValueError("ota message has no 'state'")
    view.ota = ota
    _seen(view, ota)


# topic kind (after edge/<id>/) -> how its payload updates the device's view
READERS: dict[str, Callable[[DeviceView, bytes], None]] = {
    "status": _read_status, "status/info": _read_info, "metrics": _read_metrics, "ota": _read_ota}
