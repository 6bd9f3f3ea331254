"""The daemon end to end: a real OCR bundle, real images in a watched folder, a real mosquitto."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.daemon.service import DaemonOptions
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
                          "--device-id", DEVICE, "--poll-interval", "0.2"])
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
                          "mqtt://127.0.0.1:1", "--device-id", "cam-01"])
    assert daemon.process.wait(timeout=30) == 2      # the CLI's exit code for a user error
    daemon.wait_log(r"^edge run: error: source: folder .*missing does not exist$")
    assert "Traceback" not in daemon.log


@pytest.mark.parametrize("change, field", [
    ({"mqtt_url": "http://broker:1883"}, "mqtt"),
    ({"mqtt_url": "mqtt://broker:99999"}, "mqtt"),
    ({"device_id": "cam/01"}, "device_id"),
    ({"device_id": "+"}, "device_id"),
    ({"pipeline": "ocr#1"}, "pipeline"),
    ({"qos": 3}, "qos"),
    ({"colour": "red"}, "colour"),
])
def test_daemon_options_name_the_wrong_field(tmp_path, change, field):
    values = {"bundle": tmp_path, "source": str(tmp_path), "mqtt_url": "mqtt://127.0.0.1:1883",
              "device_id": "cam-01", **change}
    with pytest.raises(ConfigError) as err:
        DaemonOptions.build(**values)
    assert err.value.field == field
    assert "\n" not in str(err.value)


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
        open_source("rtsp://camera/stream", poll_interval=0.5)


def drain(source, settle: float, looks: int = 4) -> list:
    """Everything the source hands out over a few looks spaced past its settle time."""
    frames = []
    for _ in range(looks):
        while (frame := source.next_frame()) is not None:
            frames.append(frame)
        time.sleep(settle * 1.5)
    return frames
