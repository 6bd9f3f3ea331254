"""The ledger: which inputs each pipeline has already turned into a message, kept across restarts.

An input is recorded in the same transaction that puts its result (or error) into the spool
(`Spool.add(..., also=ledger.marker(...))`), so a daemon killed at any moment and started again
neither loses the input's result nor processes it a second time.

Only inputs that can come back after a restart are recorded: files (by path, size and modification
time, so a file replaced under the same name is new) and frames whose source gives them a stable
`key` (a video file's frame number). Frames of live sources (cameras, streams) are not.
Records older than `keep_days` are forgotten at start-up, bounding the table on a device that
watches a folder for months; a file older than that still lying in the folder would be read again.

It also keeps each pipeline's last `seq` (the input number in every message), written in the same
transaction as the message that carries it, so numbering goes on after a restart instead of starting
at 1 again (live sources included).
"""
from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable

from .spool import StateDb

DAY_S = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    pipeline TEXT NOT NULL,
    item     TEXT NOT NULL,
    at       REAL NOT NULL,      -- unix time of the record, for pruning
    PRIMARY KEY (pipeline, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq (
    pipeline TEXT PRIMARY KEY,
    last     INTEGER NOT NULL    -- the seq of the pipeline's last spooled input
) WITHOUT ROWID
"""


class Ledger:
    def __init__(self, db: StateDb, keep_days: float = 90.0):
        self.db = db
        with db.transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("DELETE FROM ledger WHERE at < ?", (time.time() - keep_days * DAY_S,))

    def done(self, pipeline: str, item: str) -> bool:
        """Whether `item` already gave a message in `pipeline` (before a restart, or earlier in this run)."""
        with self.db.lock:
            row = self.db.conn.execute("SELECT 1 FROM ledger WHERE pipeline = ? AND item = ?",
                                       (pipeline, item)).fetchone()
        return row is not None

    def marker(self, pipeline: str, item: str | None,
               seq: int | None = None) -> Callable[[sqlite3.Connection], None]:
        """What records `item` as processed (None: an input that cannot come back) and `seq` as the
        pipeline's last number, to run inside the transaction that spools the input's message."""
        def record(conn: sqlite3.Connection) -> None:
            if item is not None:
                conn.execute("INSERT OR REPLACE INTO ledger (pipeline, item, at) VALUES (?, ?, ?)",
                             (pipeline, item, time.time()))
            if seq is not None:
                conn.execute("INSERT OR REPLACE INTO seq (pipeline, last) VALUES (?, ?)", (pipeline, seq))
        return record

    def last_seq(self, pipeline: str) -> int:
        """The seq of the pipeline's last spooled input before this start; 0 for a new pipeline."""
        with self.db.lock:
            row = self.db.conn.execute("SELECT last FROM seq WHERE pipeline = ?", (pipeline,)).fetchone()
        return int(row[0]) if row else 0

    def count(self, pipeline: str) -> int:
        with self.db.lock:
            return self.db.conn.execute("SELECT count(*) FROM ledger WHERE pipeline = ?", (pipeline,)).fetchone()[0]


def item_key(frame: Any) -> str | None:
    """The ledger key of a frame: its source's `key` if it gives one, a file's identity, else None (live)."""
    key = getattr(frame, "key", None)
    if key is not None:
        return str(key)
    try:
        stat = os.stat(frame.source)
    except (OSError, TypeError, ValueError):
        return None
    if not os.path.isfile(frame.source):
        return None
    return f"{os.path.abspath(frame.source)}|{stat.st_size}|{stat.st_mtime_ns}"
