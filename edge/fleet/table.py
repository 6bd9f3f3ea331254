"""The fleet as a terminal table (rich) or as JSON: the same rows, `DeviceView.row()`."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"online": "green", "offline": "red", "unknown": "yellow"}
# column title -> how a row shows in it (None: "-")
COLUMNS: dict[str, Any] = {
    "DEVICE": lambda r: r["device"],
    "STATUS": lambda r: Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
    "EDGE": lambda r: r["version"],
    "GROUP": lambda r: r["group"],
    "BUNDLES": lambda r: ", ".join(r["bundles"]) or None,
    "SLOTS": lambda r: slots_text(r["slots"]),
    "FPS": lambda r: None if r["fps"] is None else f"{r['fps']:.1f}",
    "SPOOL": lambda r: r["spool_depth"],
    "LAST SEEN": lambda r: age(r["last_seen"]),
    "OTA": lambda r: ota_text(r),
    "PROBLEMS": lambda r: "; ".join(f"{k}: {v}" for k, v in r["problems"].items()) or None,
}


def age(stamp: str | None, now: datetime | None = None) -> str | None:
    """'12 s ago', '5 min ago', '3 h ago', or the date for older; None when never seen."""
    if stamp is None:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return when.strftime("%Y-%m-%d %H:%M")


def slots_text(slots: dict[str, dict]) -> str | None:
    """'seg 1.1 (1.0)': per bundle the active version and, in brackets, the standby one a rollback returns to."""
    return ", ".join(f"{name} {s['active'] or '-'}" + (f" ({s['standby']})" if s["standby"] else "")
                     for name, s in slots.items()) or None


def ota_text(row: dict[str, Any]) -> str | None:
    if row["ota_state"] is None:
        return None
    progress = f" {row['ota_progress']:.0f}%" if row["ota_progress"] is not None else ""
    error = f": {row['ota_error']}" if row["ota_error"] else ""
    return f"{row['ota_state']}{progress}{error}"


def fleet_table(rows: list[dict[str, Any]], caption: str | None = None) -> Table:
    table = Table(caption=caption, caption_justify="left", show_edge=False, pad_edge=False)
    # In a narrow terminal the other columns wrap; the device and its status stay whole on one line.
    whole = {"DEVICE": max((len(r["device"]) for r in rows), default=6), "STATUS": len("offline")}
    cells = [{title: show(row) for title, show in COLUMNS.items()} for row in rows]
    # A column no device fills (no OTA, no problems) only takes room from the others.
    shown = [title for title in COLUMNS if title in whole or any(c[title] is not None for c in cells)]
    for title in shown:
        table.add_column(title, no_wrap=title in whole, min_width=whole.get(title), overflow="fold")
    for row in cells:
        table.add_row(*(_cell(row[title]) for title in shown))
    return table


def _cell(value: Any) -> Any:
    if value is None:
        return "-"
    return value if isinstance(value, Text) else str(value)


def summary(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no devices yet"
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUS_STYLE}
    return f"{len(rows)} device(s): " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=2)


def row_json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))
