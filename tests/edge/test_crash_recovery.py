"""Nothing lost: kill -9 the broker, or the daemon, in the middle of a run and start it again.

A real mosquitto with persistence on (`autosave_interval 1`) and a subscriber with a persistent
session; a folder of real images read by the real OCR bundle. Every input's result must arrive, and
a result that arrives twice must carry the same message id both times (the spool replays the stored
bytes; a second processing of the same file would make a new id). Counts are printed for the report.
"""
from __future__ import annotations

import re
import shutil
import time
from collections import defaultdict
from pathlib import Path

from edge.daemon import contract

DEVICE, PIPELINE = "cam-crash", "ocr"
IMAGES = ("ocr_word_en_10.png", "ocr_word_ch_1.jpg")
INPUTS = 24
RATE = 4          # frames per second at most: the run lasts >= 6 s whatever the machine, so a kill lands mid-run


def prepare(tmp_path: Path, shared_dir: Path, broker_url: str) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(INPUTS):
        name = IMAGES[n % len(IMAGES)]
        shutil.copy(shared_dir / "images" / name, folder / f"{n:03d}{Path(name).suffix}")
    config = tmp_path / "edge.yaml"
    config.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{broker_url}"}}
state_dir: {tmp_path / "state"}
metrics_interval: 0
drain_timeout: 20
pipelines:
  - {{name: {PIPELINE}, bundle: BUNDLE, source: {folder}, poll_interval: 0.2, rate_limit: {RATE}}}
""", encoding="utf-8")
    return config


def persistent_subscriber(broker, mqtt_subscriber, topic: str):
    subscribed_at = time.time()
    sub = mqtt_subscriber(broker, [topic], persistent=True)
    broker.wait_saved(since=subscribed_at)      # the session itself survives the broker's SIGKILL
    return sub


def source_name(received) -> str:
    return Path(received.json()["source"]).name


def tally(received: list) -> dict[str, set[str]]:
    """input file -> the message ids its results arrived with."""
    ids: dict[str, set[str]] = defaultdict(set)
    for message in received:
        ids[source_name(message)].add(message.json()["id"])
    return ids


def report(what: str, received: list, ids: dict[str, set[str]]) -> None:
    distinct = sum(len(v) for v in ids.values())
    print(f"\n[crash recovery] {what}: {INPUTS} inputs, {len(received)} result messages received, "
          f"{distinct} distinct ids, {len(received) - distinct} duplicate deliveries (same id)")


def test_broker_killed_mid_run_every_result_arrives_duplicates_keep_their_id(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    config = prepare(tmp_path, shared_dir, mqtt_broker.url)
    config.write_text(config.read_text().replace("BUNDLE", str(ocr_bundle_dir)))
    topic = contract.results_topic(DEVICE, PIPELINE)
    sub = persistent_subscriber(mqtt_broker, mqtt_subscriber, topic)
    daemon = edge_daemon([str(config)])

    sub.wait_for(topic, 4, timeout=60)
    mqtt_broker.kill()                          # SIGKILL mid-run: no goodbye, only its last autosave
    daemon.wait_log(r"lost the broker")
    daemon.wait_log(r"result seq=\d+ .*broker away: queued", timeout=30)
    mqtt_broker.start()

    received = sub.wait_for(topic, INPUTS, timeout=90, distinct=source_name)
    assert daemon.terminate() == 0, daemon.log
    ids = tally(sub.on(topic))
    report("broker kill -9", sub.on(topic), ids)
    assert sorted(ids) == sorted(f"{n:03d}{Path(IMAGES[n % 2]).suffix}" for n in range(INPUTS))
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    assert len(received) >= INPUTS and "Traceback" not in daemon.log


def test_daemon_killed_mid_run_and_restarted_every_result_arrives_no_file_twice(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    config = prepare(tmp_path, shared_dir, mqtt_broker.url)
    config.write_text(config.read_text().replace("BUNDLE", str(ocr_bundle_dir)))
    topic = contract.results_topic(DEVICE, PIPELINE)
    sub = persistent_subscriber(mqtt_broker, mqtt_subscriber, topic)

    first = edge_daemon([str(config)])
    sub.wait_for(topic, 6, timeout=60)
    # The broker stalls, so the last results are sent but never acknowledged; then the daemon dies.
    mqtt_broker.freeze()
    made = len(first.wait_log(r"result seq=\d+ "))
    first.wait_log(r"result seq=\d+ ", count=made + 2, timeout=30)
    first.kill()                                # SIGKILL mid-run: what was not acknowledged stays in the spool
    mqtt_broker.thaw()                          # reads what the dead daemon had sent: the same ids come again
    done_before = set(re.findall(r"result seq=\d+ (\S+):", first.log))
    assert 6 <= len(done_before) < INPUTS, first.log

    second = edge_daemon([str(config)])
    second.wait_log(r"spool holds \d+ message\(s\) from before")
    received = sub.wait_for(topic, INPUTS, timeout=90, distinct=source_name)
    assert second.terminate() == 0, second.log
    done_after = set(re.findall(r"result seq=\d+ (\S+):", second.log))
    skipped = int(second.wait_log(r"stopped: \d+ result\(s\), 0 error\(s\), \d+ input\(s\) skipped")[0]
                  .split("error(s), ")[1].split()[0])
    ids = tally(sub.on(topic))
    report(f"daemon kill -9 after {len(done_before)}+ results, restart skipped {skipped} processed file(s)",
           sub.on(topic), ids)
    assert len(ids) == INPUTS
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    assert not done_before & done_after                  # no file was processed by both runs
    assert skipped >= len(done_before) and skipped + len(done_after) == INPUTS     # each input exactly once
    assert len(received) >= INPUTS and "Traceback" not in first.log + second.log
