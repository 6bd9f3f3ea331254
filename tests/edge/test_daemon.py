"""The daemon end to end: a real OCR bundle, real images in watched folders, a real mosquitto; the whole
contract (results, errors, events, metrics, status, commands, discovery) and a serial sink through a pty."""
from __future__ import annotations

import json
import os
import select
import shutil
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.daemon.sources import FolderSource, open_source
from runtimes.errors import ConfigError, ImageError
from runtimes.image import read_image

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_IMAGES = ("ocr_word_en_10.png", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg")
DEVICE = "cam-01"


def validator(schema_id: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[schema_id]).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def texts(message: dict) -> list[str]:
    return [line["text"] for line in message["results"]]


def test_daemon_reads_folder_publishes_results_and_errors_and_stops_cleanly(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    images, folder = shared_dir / "images", tmp_path / "in"
    folder.mkdir()
    for name in FIRST_IMAGES:
        shutil.copy(images / name, folder / name)
    pipeline = json.loads((ocr_bundle_dir / "manifest.json").read_text())["pipeline"]
    results, errors = contract.results_topic(DEVICE, pipeline), contract.errors_topic(DEVICE, pipeline)
    status = contract.status_topic(DEVICE)
    sub = mqtt_subscriber(mqtt_broker, [f"edge/{DEVICE}/#"])

    daemon = edge_daemon([str(ocr_bundle_dir), "--source", str(folder), "--mqtt", mqtt_broker.url,
                          "--device-id", DEVICE, "--poll-interval", "0.2", "--state-dir", str(tmp_path / "state")])
    got = [m.json() for m in sub.wait_for(results, len(FIRST_IMAGES), timeout=45)]

    result_schema = validator(contract.RESULT_SCHEMA)
    line_schema = jsonschema.Draft202012Validator(result_schema.schema["$defs"]["ocr_line"])
    for message in got:
        result_schema.validate(message)
        for line in message["results"]:
            line_schema.validate(line)
    assert {m["device"] for m in got} == {DEVICE} and {m["pipeline"] for m in got} == {pipeline}
    # Files already there are taken in name order, numbered from 1.
    assert [Path(m["source"]).name for m in sorted(got, key=lambda m: m["seq"])] == sorted(FIRST_IMAGES)
    assert sorted(m["seq"] for m in got) == [1, 2, 3]
    assert len({m["id"] for m in got}) == 3
    by_name = {Path(m["source"]).name: m for m in got}
    assert "PAIN" in texts(by_name["ocr_word_en_10.png"])
    assert "韩国小馆" in texts(by_name["ocr_word_ch_1.jpg"])

    online = mqtt_broker.retained(status)
    assert (online.text, online.retain) == (contract.STATUS_ONLINE, True)

    # A truncated JPEG and a text file named .jpg: one error each, then the daemon goes on.
    jpeg = (images / "ocr_word_ch_1.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.jpg").write_text("this is not an image\n")
    error_messages = [m.json() for m in sub.wait_for(errors, 2, timeout=30)]
    for message in error_messages:
        validator(contract.ERROR_SCHEMA).validate(message)
    assert {Path(m["source"]).name for m in error_messages} == {"broken.jpg", "notes.jpg"}
    assert sorted(m["seq"] for m in error_messages) == [4, 5]
    assert "truncated" in next(m["error"] for m in error_messages if m["source"].endswith("broken.jpg"))

    shutil.copy(images / "ocr_word_en_10.png", folder / "zz_after_errors.png")
    after = sub.wait_for(results, 4, timeout=30)[-1].json()
    result_schema.validate(after)
    assert (Path(after["source"]).name, after["seq"]) == ("zz_after_errors.png", 6)
    assert "PAIN" in texts(after)

    assert daemon.terminate() == 0, daemon.log
    offline = mqtt_broker.retained(status)
    assert (offline.text, offline.retain) == (contract.STATUS_OFFLINE, True)
    assert "Traceback" not in daemon.log
    assert len(sub.on(results)) == 4 and len(sub.on(errors)) == 2


def test_daemon_refuses_bad_options_in_one_line(tmp_path, ocr_bundle_dir, edge_daemon):
    daemon = edge_daemon([str(ocr_bundle_dir), "--source", str(tmp_path / "missing"), "--mqtt",
                          "mqtt://127.0.0.1:1", "--device-id", "cam-01", "--state-dir", str(tmp_path / "state")])
    assert daemon.process.wait(timeout=30) == 2      # the CLI's exit code for a user error
    daemon.wait_log(r"^edge run: error: source: folder .*missing does not exist$")
    assert "Traceback" not in daemon.log


def test_a_list_source_is_read_once_and_the_daemon_then_ends_by_itself(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    listing = tmp_path / "batch.txt"
    listing.write_text("\n".join(str(shared_dir / "images" / name) for name in FIRST_IMAGES[:2]) + "\n")
    topic = contract.results_topic(DEVICE, "batch")
    sub = mqtt_subscriber(mqtt_broker, [topic])
    daemon = edge_daemon([str(ocr_bundle_dir), "--source", f"list:{listing}", "--mqtt", mqtt_broker.url,
                          "--device-id", DEVICE, "--pipeline", "batch", "--state-dir", str(tmp_path / "state")])
    assert daemon.process.wait(timeout=60) == 0, daemon.log
    daemon.wait_log(r"stopping on sources finished")
    got = [m.json() for m in sub.wait_for(topic, 2)]
    assert [Path(m["source"]).name for m in got] == list(FIRST_IMAGES[:2])
    assert "Traceback" not in daemon.log


class PtyReader:
    """The device end of a pseudo-terminal: `port` is what the daemon opens, `lines()` what it wrote."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()     # the slave stays open here too, so reads never see EIO
        self.port = os.ttyname(self.slave)
        self.data = bytearray()

    def lines(self) -> list[str]:
        while select.select([self.master], [], [], 0)[0]:
            self.data += os.read(self.master, 65536)
        *complete, _partial = self.data.decode("utf-8").split("\n")
        return [line.rstrip("\r") for line in complete]

    def wait_lines(self, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count and time.monotonic() < deadline:
            select.select([self.master], [], [], 0.2)
        return self.lines()

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def test_two_pipelines_with_threshold_rules_metrics_status_commands_discovery_and_serial(
        tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber, edge_daemon):
    device, images = "cam-09", shared_dir / "images"
    folders = {name: tmp_path / name for name in ("words", "strict")}
    for folder in folders.values():
        folder.mkdir()
        shutil.copy(images / "ocr_word_en_10.png", folder / "a.png")     # reads PAIN
        shutil.copy(images / "ocr_en_img623.jpg", folder / "b.jpg")      # several lines, no PAIN
    state, serial = tmp_path / "state", PtyReader()
    config = tmp_path / "edge.yaml"
    config.write_text(f"""\
device_id: {device}
broker: {{url: "{mqtt_broker.url}"}}
state_dir: {state}
bundles_dir: {tmp_path / "bundles"}
metrics_interval: 1
ha_discovery: true
pipelines:
  - name: words
    bundle: {ocr_bundle_dir}
    source: {folders["words"]}
    poll_interval: 0.2
    rules: [{{type: presence, name: pain, label: PAIN}}]
  - {{name: strict, bundle: {ocr_bundle_dir}, source: {folders["strict"]}, poll_interval: 0.2, threshold: 0.95}}
sinks:
  serial: {{port: {serial.port}}}
""", encoding="utf-8")
    sub = mqtt_subscriber(mqtt_broker, [f"edge/{device}/#", "homeassistant/#"])
    daemon = edge_daemon([str(config)])
    try:
        words = {Path(m.json()["source"]).name: m.json()
                 for m in sub.wait_for(contract.results_topic(device, "words"), 2, timeout=60)}
        strict = {Path(m.json()["source"]).name: m.json()
                  for m in sub.wait_for(contract.results_topic(device, "strict"), 2, timeout=60)}
        for message in [*words.values(), *strict.values()]:
            validator(contract.RESULT_SCHEMA).validate(message)
        # Same bundle, same images: the strict pipeline keeps exactly the lines scoring 0.95 or more.
        for name in ("a.png", "b.jpg"):
            assert strict[name]["results"] == [line for line in words[name]["results"] if line["score"] >= 0.95]

        # The presence rule: PAIN appears with a.png and disappears with b.jpg.
        events = [m.json() for m in sub.wait_for(contract.events_topic(device, "words"), 2)]
        for event in events:
            validator(contract.EVENT_SCHEMA).validate(event)
        assert [(e["rule"], e["change"], Path(e["source"]).name) for e in sorted(events, key=lambda e: e["seq"])] \
            == [("pain", "appeared", "a.png"), ("pain", "disappeared", "b.jpg")]

        check_status_metrics_and_discovery(sub, mqtt_broker, device)
        check_commands(sub, device, state, folders["words"], images, words["b.jpg"]["results"])

        # Every result also went out on the serial port, as one compact JSON line.
        results = [m.json() for m in sub.on(contract.results_topic(device, "words"))
                   + sub.on(contract.results_topic(device, "strict"))]
        lines = [json.loads(line) for line in serial.wait_lines(len(results))]
        assert sorted(line["id"] for line in lines) == sorted(r["id"] for r in results)
        assert daemon.terminate() == 0, daemon.log
        assert "Traceback" not in daemon.log
    finally:
        serial.close()


def check_status_metrics_and_discovery(sub, broker, device: str) -> None:
    info = broker.retained(contract.status_info_topic(device))
    validator(contract.STATUS_SCHEMA).validate(info.json())
    assert [(p["name"], p["task"], p["threshold"]) for p in info.json()["pipelines"]] == \
        [("words", "ocr", None), ("strict", "ocr", 0.95)]
    topic = contract.metrics_topic(device)
    seen = len(sub.on(topic))
    metrics = [m.json() for m in sub.wait_for(topic, seen + 2, timeout=20)]
    for message in metrics:
        validator(contract.METRICS_SCHEMA).validate(message)
    assert set(metrics[-1]["pipelines"]) == {"words", "strict"}
    assert metrics[-1]["connected"] is True and metrics[-1]["spool_depth"] >= 0
    assert sum(m["pipelines"]["words"]["frames"] for m in metrics) >= 0
    discovery = [m for m in sub.messages if m.topic.startswith("homeassistant/")]
    assert discovery and all(m.retain or m.json() for m in discovery)
    configs = {m.topic: m.json() for m in discovery}
    assert f"homeassistant/binary_sensor/{device}/words_rule_pain/config" in configs
    assert {c["availability_topic"] for c in configs.values()} == {contract.status_topic(device)}


def command(sub, device: str, name: str, payload: str | bytes) -> dict:
    """Publish a command and return its reply (validated against the reply schema)."""
    reply_topic = contract.reply_topic(device, name)
    seen = len(sub.on(reply_topic))
    sub.client.publish(contract.command_topic(device, name), payload, qos=1)
    reply = sub.wait_for(reply_topic, seen + 1, timeout=30)[-1].json()
    validator(contract.REPLY_SCHEMA).validate(reply)
    return reply


def check_commands(sub, device: str, state: Path, words_folder: Path, images: Path, b_lines: list[dict]) -> None:
    # A threshold between the lowest and the highest score b.jpg got, so it must leave some lines out.
    scores = sorted(line["score"] for line in b_lines)
    assert scores[0] < scores[-1], b_lines
    value = round((scores[0] + scores[-1]) / 2, 4)
    assert command(sub, device, "set_threshold", json.dumps({"pipeline": "words", "value": value,
                                                             "request_id": "t1"}))["result"] \
        == {"pipeline": "words", "threshold": value}
    assert command(sub, device, "pause", '{"pipeline": "words"}')["ok"]
    snapshot = command(sub, device, "snapshot", '{"pipeline": "strict"}')
    assert snapshot["ok"] and (state / "snapshots" / snapshot["result"]["file"]).is_file()
    assert command(sub, device, "reload", '{"pipeline": "strict"}')["ok"]
    refused = {
        "reload": '{"pipeline": "strict", "bundle": "missing"}',
        "self_destruct": "{}",
        "pause": "rm -rf /",
        "set_threshold": '{"pipeline": "nowhere", "value": 0.5}',
    }
    for name, payload in refused.items():
        reply = command(sub, device, name, payload)
        assert not reply["ok"] and reply["error"], reply
    info = sub.wait_for(contract.status_info_topic(device), 1)[-1].json()
    assert info["pipelines"][0]["paused"] is True and info["pipelines"][0]["threshold"] == value

    assert command(sub, device, "resume", "")["result"]["paused"] is False
    shutil.copy(images / "ocr_en_img623.jpg", words_folder / "c.jpg")      # b.jpg again, under the new threshold
    results = contract.results_topic(device, "words")
    after = next(m.json() for m in sub.wait_for(results, 3, timeout=45) if m.json()["source"].endswith("c.jpg"))
    assert after["results"] == [line for line in b_lines if line["score"] >= value]
    assert 0 < len(after["results"]) < len(b_lines)


def test_folder_source_takes_backlog_in_name_order_then_new_files_once(tmp_path, shared_dir):
    images = shared_dir / "images"
    for name in FIRST_IMAGES:
        shutil.copy(images / name, tmp_path / name)
    (tmp_path / ".partial.jpg").write_bytes(b"hidden: a writer's temporary file")
    (tmp_path / "readme.txt").write_text("not an image suffix")
    source = open_source(str(tmp_path), poll_interval=0.05)
    assert isinstance(source, FolderSource)

    taken = drain(source, settle=0.05)
    assert [Path(f.source).name for f in taken] == sorted(FIRST_IMAGES)
    assert taken[0].load().shape[2] == 3

    shutil.copy(images / "ocr_1.jpg", tmp_path / "a_new.jpg")
    assert [Path(f.source).name for f in drain(source, settle=0.05)] == ["a_new.jpg"]
    assert drain(source, settle=0.05) == []


def test_folder_source_waits_until_a_file_stops_growing(tmp_path, shared_dir):
    data = (shared_dir / "images" / "ocr_1.jpg").read_bytes()
    source = FolderSource(str(tmp_path), poll_interval=0.2)
    target = tmp_path / "copying.jpg"
    with open(target, "wb") as fh:
        for start in range(0, len(data), len(data) // 4):
            fh.write(data[start:start + len(data) // 4])
            fh.flush()
            # Each look sees a new size, so the file never counts as settled while it grows.
            assert source.next_frame() is None
    frames = drain(source, settle=0.2)
    assert [f.source for f in frames] == [str(target)]
    assert np.array_equal(frames[0].load(), read_image(shared_dir / "images" / "ocr_1.jpg"))


def test_folder_source_frame_of_a_corrupt_file_raises_image_error(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    frames = drain(FolderSource(str(tmp_path), poll_interval=0.05), settle=0.05)
    with pytest.raises(ImageError, match="truncated PNG"):
        frames[0].load()


def test_folder_source_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(str(tmp_path / "nope"), poll_interval=0.5)
    with pytest.raises(ConfigError, match="not a source this edge can read"):
        open_source("ftp://camera/stream", poll_interval=0.5)


def drain(source, settle: float, looks: int = 4) -> list:
    """Everything the source hands out over a few looks spaced past its settle time."""
    frames = []
    for _ in range(looks):
        while (frame := source.next_frame()) is not None:
            frames.append(frame)
        time.sleep(settle * 1.5)
    return frames
