"""The state folder's database and the spool: messages kept on disk until the broker acknowledged them.

One SQLite file (`<state_dir>/state.db`, WAL) holds the spool and the ledger (`ledger.py`), so that
enqueueing a result and recording its input as processed is one transaction: after a crash either
both happened or neither did. A lock file stops a second daemon from sharing the folder.

Policy when the spool is full (`max_messages` or `max_mb`): the oldest result or event is dropped
to make room, never an error message unless the spool holds nothing else; drops are counted
(`Spool.dropped`, reported in metrics). Pipelines reading files do not let it come to that: they
wait while the spool is full, leaving their files unread (see `Spool.full`).
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from runtimes.errors import ConfigError, EdgeError

from .outbox import NewMessage, OutgoingMessage

log = logging.getLogger("edge.daemon.spool")

STATE_DB, LOCK_FILE = "state.db", "daemon.lock"
SCHEMA_VERSION = 1
# Kinds the full-spool policy may drop; anything else (errors) is kept while there is a choice.
DROPPABLE_KINDS = ("result", "event")
REMOVE_CHUNK = 500              # keys per DELETE ... IN (...): old SQLite allows 999 variables

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    key     INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so replay order is enqueue order
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,                    -- the exact bytes, message id included: replays are identical
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    kind    TEXT    NOT NULL
);
"""


class StateDb:
    """The SQLite connection of one state folder, shared by the spool and the ledger.

    Pipelines run in threads; one connection behind one lock keeps every transaction whole
    (SQLite would serialise the writers anyway)."""

    def __init__(self, state_dir: Path, synchronous: str = "normal"):
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the state folder {self.state_dir}: {err.strerror}",
                              field="state_dir") from None
        self._lock_fh = _lock_folder(self.state_dir)
        self.path = self.state_dir / STATE_DB
        try:
            self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.conn.execute("PRAGMA busy_timeout=5000")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise EdgeError(f"state database {self.path} is unusable ({err}); move it away to start afresh") from None
        if version not in (0, SCHEMA_VERSION):
            raise EdgeError(f"state database {self.path} has schema {version}; this edge reads {SCHEMA_VERSION}")
        self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on an exception), holding the lock throughout."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()
        self._lock_fh.close()


def _lock_folder(state_dir: Path):
    """An exclusive lock on the folder for this process' lifetime (released by the OS even on kill -9)."""
    handle = open(state_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{state_dir} is in use by another edge daemon (pid {owner}); "
                          "give each daemon its own state folder", field="state_dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Spool:
    """The outbox.Outbox on disk: add, hand out oldest first, remove once acknowledged, bounded in size."""

    def __init__(self, db: StateDb, max_messages: int = 100_000, max_bytes: int = 100 * 2**20):
        self.db, self.max_messages, self.max_bytes = db, max_messages, max_bytes
        self.dropped = 0
        with db.transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
        self._recount()
        if self._count:
            log.info("spool holds %d message(s) from before; they are sent first", self._count)

    def add_all(self, messages: list[NewMessage], also: Callable[[sqlite3.Connection], None] | None = None
                ) -> list[int]:
        """Store the messages (and run `also`, e.g. a ledger record) in one transaction; their keys."""
        keys = []
        try:
            self._add_all(messages, also, keys)
        except BaseException:
            self._recount()        # the transaction rolled back; so must the counters
            raise
        return keys

    def _add_all(self, messages: list[NewMessage], also: Callable[[sqlite3.Connection], None] | None,
                 keys: list[int]) -> None:
        with self.db.transaction() as conn:
            for topic, payload, qos, kind in messages:
                while self._count and (self._count >= self.max_messages
                                       or self._bytes + len(payload) > self.max_bytes):
                    self._drop_oldest(conn)
                keys.append(conn.execute("INSERT INTO spool (topic, payload, qos, retain, kind) "
                                         "VALUES (?, ?, ?, 0, ?)", (topic, payload, qos, kind)).lastrowid)
                self._count += 1
                self._bytes += len(payload)
            if also is not None:
                also(conn)

    def _recount(self) -> None:
        with self.db.lock:
            self._count, self._bytes = self.db.conn.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM spool").fetchone()

    def _drop_oldest(self, conn: sqlite3.Connection) -> None:
        marks = ",".join("?" * len(DROPPABLE_KINDS))
        row = conn.execute(f"SELECT key, length(payload) FROM spool WHERE kind IN ({marks}) ORDER BY key LIMIT 1",
                           DROPPABLE_KINDS).fetchone()
        row = row or conn.execute("SELECT key, length(payload) FROM spool ORDER BY key LIMIT 1").fetchone()
        conn.execute("DELETE FROM spool WHERE key = ?", (row[0],))
        self._count -= 1
        self._bytes -= row[1]
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("spool full (%d messages, %.1f MB): dropped the oldest result; %d dropped so far",
                        self._count + 1, self._bytes / 2**20, self.dropped)

    def pending(self, after: int, limit: int) -> list[OutgoingMessage]:
        """Up to `limit` messages with keys above `after`, oldest first."""
        with self.db.lock:
            rows = self.db.conn.execute("SELECT key, topic, payload, qos, retain FROM spool WHERE key > ? "
                                        "ORDER BY key LIMIT ?", (after, limit)).fetchall()
        return [OutgoingMessage(key, topic, bytes(payload), qos, bool(retain))
                for key, topic, payload, qos, retain in rows]

    def remove(self, keys: list[int]) -> None:
        """Forget acknowledged messages (keys already dropped are ignored), one transaction per call."""
        with self.db.transaction() as conn:
            for start in range(0, len(keys), REMOVE_CHUNK):
                chunk = keys[start:start + REMOVE_CHUNK]
                marks = ",".join("?" * len(chunk))
                count, size = conn.execute(f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM spool "
                                           f"WHERE key IN ({marks})", chunk).fetchone()
                conn.execute(f"DELETE FROM spool WHERE key IN ({marks})", chunk)
                self._count -= count
                self._bytes -= size

    @property
    def full(self) -> bool:
        """At its bound: the next message would push out an older one."""
        return self._count >= self.max_messages or self._bytes >= self.max_bytes

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._count
