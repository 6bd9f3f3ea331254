"""The RunContext a device opens a bundle with (state folder, its own artifact choice)."""
from __future__ import annotations

import logging
from pathlib import Path

from runtimes.bundle import Bundle
from runtimes.run_context import RunContext

from .record import read_record, record_path

log = logging.getLogger(__name__)

NO_RECORD = ("no edge bench record for this bundle here: the bundle's order of preference, filtered by what "
             "loads on this machine")


def device_context(bundle: Bundle, state_dir: Path | None, use_record: bool = True) -> RunContext:
    """How this device runs `bundle`: caches under `state_dir`, and the artifacts its `edge bench` record
    (in `state_dir`) chose. Without a record, or with `use_record` False (the user named a precision),
    open_artifact keeps the bundle's order."""
    record = read_record(bundle, state_dir) if use_record else None
    if record is None:
        return RunContext(state_dir=state_dir)
    log.info("%s: runs the artifacts edge bench chose on %s (%s): %s", bundle.manifest.pipeline, record.created,
             record_path(bundle, state_dir), ", ".join(f"{c.role} {c.chosen}" for c in record.roles))
    return RunContext(state_dir=state_dir, prefer=record.prefer(), prefer_reason=record.reason())


def describe_choice(context: RunContext) -> dict:
    """For status/info and `edge inspect`: the artifact chosen per model, and why."""
    if not context.prefer:
        return {"by": "bundle order", "artifacts": {}, "why": NO_RECORD}
    return {"by": "edge bench", "artifacts": dict(context.prefer), "why": context.prefer_reason}
