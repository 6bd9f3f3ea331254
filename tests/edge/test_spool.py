"""The state folder: the SQLite spool (kept until PUBACK, replayed after a restart, bounded) and the ledger."""
from __future__ import annotations

import sqlite3

import pytest

from edge.daemon.ledger import Ledger
from edge.daemon.mqtt import MqttPublisher
from edge.daemon.spool import Spool, StateDb
from runtimes.errors import ConfigError


def spool_at(folder, **bounds) -> tuple[StateDb, Spool]:
    db = StateDb(folder)
    return db, Spool(db, **bounds)


def test_spool_keeps_messages_across_a_reopen_in_order_with_the_same_bytes(tmp_path):
    db, spool = spool_at(tmp_path)
    payloads = [f'{{"id": "m{n}"}}'.encode() for n in range(5)]
    keys = spool.add_all([("edge/d/p/results", p, 1, "result") for p in payloads])
    assert keys == sorted(keys) and len(spool) == 5
    spool.remove(keys[:2])
    db.close()

    db, spool = spool_at(tmp_path)
    waiting = spool.pending(after=0, limit=10)
    assert [m.payload for m in waiting] == payloads[2:]
    assert [m.key for m in waiting] == keys[2:]
    assert [m.payload for m in spool.pending(after=keys[2], limit=1)] == [payloads[3]]
    # Keys are never reused: a message added now sorts after everything ever added.
    assert spool.add_all([("edge/d/p/results", b"new", 1, "result")])[0] > keys[-1]
    db.close()


def test_a_full_spool_drops_the_oldest_results_and_keeps_errors(tmp_path):
    db, spool = spool_at(tmp_path, max_messages=100)
    spool.add_all([("edge/d/p/errors", b"error 0", 1, "error")])
    spool.add_all([("edge/d/p/results", f"result {n}".encode(), 1, "result") for n in range(99)])
    assert spool.full and spool.dropped == 0
    spool.add_all([("edge/d/p/results", b"result 99", 1, "result"), ("edge/d/p/events", b"event", 1, "event")])
    kept = [m.payload for m in spool.pending(0, 200)]
    assert len(kept) == 100 and spool.dropped == 2
    assert kept[0] == b"error 0" and b"result 0" not in kept and b"result 1" not in kept
    assert kept[-2:] == [b"result 99", b"event"]
    db.close()


def test_a_spool_is_bounded_in_bytes_too(tmp_path):
    db = StateDb(tmp_path)
    spool = Spool(db, max_messages=1000, max_bytes=10_000)
    for n in range(30):
        spool.add_all([("edge/d/p/results", bytes([n]) * 1000, 1, "result")])
    assert spool.size_bytes <= 10_000 and len(spool) == 10 and spool.dropped == 20
    assert spool.pending(0, 1)[0].payload[0] == 20          # the oldest survivor
    db.close()


def test_ledger_record_and_message_commit_together_or_not_at_all(tmp_path):
    db, spool = spool_at(tmp_path)
    ledger = Ledger(db)

    def broken(conn: sqlite3.Connection) -> None:
        ledger.marker("p", "b.jpg|1|1")(conn)
        raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        spool.add_all([("edge/d/p/results", b"lost", 1, "result")], also=broken)
    assert len(spool) == 0 and not ledger.done("p", "b.jpg|1|1")

    spool.add_all([("edge/d/p/results", b"kept", 1, "result")], also=ledger.marker("p", "a.jpg|1|1"))
    db.close()
    db, spool = spool_at(tmp_path)
    ledger = Ledger(db)
    assert ledger.done("p", "a.jpg|1|1") and not ledger.done("other", "a.jpg|1|1")
    assert [m.payload for m in spool.pending(0, 5)] == [b"kept"]
    db.close()


def test_ledger_forgets_records_older_than_it_keeps(tmp_path):
    db = StateDb(tmp_path)
    ledger = Ledger(db)
    with db.transaction() as conn:
        ledger.marker("p", "old")(conn)
        conn.execute("UPDATE ledger SET at = at - 100 * 86400 WHERE item = 'old'")
        ledger.marker("p", "new")(conn)
    ledger = Ledger(db, keep_days=90)
    assert (ledger.done("p", "old"), ledger.done("p", "new"), ledger.count("p")) == (False, True, 1)
    db.close()


def test_a_state_folder_serves_one_daemon_at_a_time(tmp_path):
    db = StateDb(tmp_path)
    with pytest.raises(ConfigError, match="in use by another edge daemon"):
        StateDb(tmp_path)
    db.close()
    StateDb(tmp_path).close()       # free again once the first one is gone


def test_spooled_messages_of_a_dead_publisher_are_delivered_by_the_next_one(
        tmp_path, mqtt_broker, mqtt_subscriber):
    """The restart path without a model: messages spooled while the broker was away, the process gone
    without a drain; a new publisher on the same state folder delivers each once, same bytes."""
    topic = "edge/spool-test/p/results"
    sub = mqtt_subscriber(mqtt_broker, [topic], persistent=True)
    mqtt_broker.stop()
    db, spool = spool_at(tmp_path)
    first = MqttPublisher(mqtt_broker.url, "spool-test", spool)
    first.start()
    for n in range(40):
        first.publish(topic, f'{{"id": "m{n}"}}'.encode())
    first.pump(timeout=0.3)
    assert (first.connected, len(spool)) == (False, 40)
    first.stop()
    db.close()

    mqtt_broker.start()
    db, spool = spool_at(tmp_path)
    second = MqttPublisher(mqtt_broker.url, "spool-test", spool, window=7)     # a small window: many refills
    second.start()
    try:
        assert second.drain(timeout=45) == 0
    finally:
        second.stop()
        db.close()
    got = [m.text for m in sub.wait_for(topic, 40, timeout=20)]
    assert got == [f'{{"id": "m{n}"}}' for n in range(40)]
