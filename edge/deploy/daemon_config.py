"""The daemon config a deploy writes when the user gives no config of their own.

Paths are the target's own absolute paths: the bundle through its `current` link (so an update only
moves the link), the state and a folder source inside /var/lib/edge, the one folder the service's
sandbox lets the daemon write (StateDirectory=edge).
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

BUNDLES_DIR = Path("/opt/edge/bundles")
STATE_DIR = "/var/lib/edge/state"
DEFAULT_SOURCE = "/var/lib/edge/incoming"           # drop pictures here (or pass --source camera:0, rtsp://...)
DEFAULT_MQTT = "mqtt://localhost:1883"
FALLBACK_DEVICE_ID = "edge-device"


def current_link(name: str) -> Path:
    return BUNDLES_DIR / name / "current"


def device_id_from_hostname(root: Path) -> str:
    """The target's hostname (ROOT/etc/hostname) as an MQTT topic level; a fallback when there is none."""
    try:
        name = (root / "etc" / "hostname").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:64]
    return name or FALLBACK_DEVICE_ID


def render(bundle_name: str, device_id: str, mqtt: str | None, source: str | None) -> str:
    config = {"device_id": device_id,
              "broker": {"url": mqtt or DEFAULT_MQTT},
              "state_dir": STATE_DIR,
              "pipelines": [{"bundle": str(current_link(bundle_name)), "source": source or DEFAULT_SOURCE}]}
    header = ("# Written by `edge deploy`. Edit freely (docs/config.md); a later deploy keeps this file\n"
              "# unless it is given --mqtt/--device-id/--source (then --force replaces it).\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def uses_default_source(text: str) -> bool:
    config = yaml.safe_load(text) or {}
    return any(isinstance(p, dict) and p.get("source") == DEFAULT_SOURCE for p in config.get("pipelines") or [])
