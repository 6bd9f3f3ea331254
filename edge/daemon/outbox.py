"""Where messages wait for the broker's acknowledgement: the interface, and the in-memory store.

The persistent store is `spool.Spool` (SQLite); `MemoryOutbox` serves where nothing must outlive the
process (measuring what the spool costs, short-lived publishers).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from runtimes.errors import EdgeError


@dataclass
class OutgoingMessage:
    key: int                        # the outbox's number: increasing, never reused
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


# (topic, payload, qos, kind): kind is "result", "event" or "error"; the full-spool policy reads it.
NewMessage = tuple[str, bytes, int, str]


class Outbox(Protocol):
    """A store of messages not yet acknowledged, safe to call from several threads."""

    dropped: int                    # messages pushed out by the full-outbox policy

    def add_all(self, messages: list[NewMessage], also: Callable[[Any], None] | None = None) -> list[int]:
        """Store the messages together (and run `also` in the same transaction); their keys."""

    def pending(self, after: int, limit: int) -> list[OutgoingMessage]:
        """Up to `limit` messages with keys above `after`, oldest first."""

    def remove(self, keys: list[int]) -> None:
        """Forget acknowledged messages (keys no longer there are ignored)."""

    @property
    def full(self) -> bool:
        """At its bound: the next message would push out an older one."""

    def __len__(self) -> int: ...


class MemoryOutbox:
    """Messages not yet acknowledged, oldest first, in memory (lost if the process dies); unbounded."""

    dropped = 0
    full = False

    def __init__(self) -> None:
        self._messages: OrderedDict[int, OutgoingMessage] = OrderedDict()
        self._next_key = 1
        self._lock = threading.Lock()

    def add_all(self, messages: list[NewMessage], also: Callable[[Any], None] | None = None) -> list[int]:
        if also is not None:
            raise EdgeError("the memory outbox has no transaction to record an input in; use the spool")
        keys = []
        with self._lock:
            for topic, payload, qos, _kind in messages:
                key, self._next_key = self._next_key, self._next_key + 1
                self._messages[key] = OutgoingMessage(key, topic, payload, qos)
                keys.append(key)
        return keys

    def pending(self, after: int, limit: int) -> list[OutgoingMessage]:
        with self._lock:
            found = []
            for key, message in self._messages.items():
                if key > after:
                    found.append(message)
                    if len(found) == limit:
                        break
            return found

    def remove(self, keys: list[int]) -> None:
        with self._lock:
            for key in keys:
                self._messages.pop(key, None)

    def __len__(self) -> int:
        return len(self._messages)
