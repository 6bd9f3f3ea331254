"""The serial trigger and the serial sink through pseudo-terminals standing in for the device.

The application opens a symlink (as it would udev's stable /dev/serial/by-id/... name); unplugging
closes the pty, replugging makes a new one and re-points the link."""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.daemon import contract
from edge.daemon.serial_sink import SerialSink, SerialSinkConfig
from edge.daemon.sources import SerialTriggerSource, SourceError, open_source
from tests.edge.test_sources import DISTINCT, nearest, real_images, servers, take, wait_until  # noqa: F401

FAST_RETRY = {"retry_initial_s": 0.05, "retry_max_s": 0.2}


class PtyDevice:
    """The device end (master) of a pty; `link` is re-pointed at its slave, the port the app opens."""

    def __init__(self, link: Path):
        self.master, self.slave = os.openpty()      # the slave stays open here too, so reads never see EIO
        temporary = link.with_name(link.name + ".new")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(os.ttyname(self.slave))
        os.replace(temporary, link)                 # atomic, like udev re-creating the by-id name
        self.received = bytearray()
        self._lock = threading.Lock()
        self._unplugged = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._unplugged.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                data = os.read(self.master, 4096)
                with self._lock:
                    self.received += data

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def lines(self) -> list[str]:
        with self._lock:
            *complete, _partial = self.received.decode("utf-8").split("\n")
        return complete

    def unplug(self) -> None:
        self._unplugged.set()
        self._reader.join()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def devices():
    """Factory: devices(link) -> a plugged-in PtyDevice; all unplugged at teardown."""
    made: list[PtyDevice] = []

    def plug(link: Path) -> PtyDevice:
        made.append(PtyDevice(link))
        return made[-1]

    yield plug
    for device in made:
        if not device._unplugged.is_set():
            device.unplug()


def detection_message(seq: int, labels_scores: list[tuple[str, float]], pipeline: str = "ppdet") -> dict:
    results = [{"label": label, "score": score, "box": [1, 2, 30, 40]} for label, score in labels_scores]
    return contract.result_message(device="cam-01", pipeline=pipeline, models=["det"], source=f"in/{seq}.jpg",
                                   seq=seq, latency_ms={"pre": 1.0, "infer": 2.0, "post": 0.5}, results=results)


# --- the sink -------------------------------------------------------------------------------------------

def test_sink_writes_compact_json_lines_and_template_lines(tmp_path, devices):
    link = tmp_path / "usb-plc"
    device = devices(link)
    detections = detection_message(1, [("person", 0.71), ("bus", 0.93), ("person", 0.64)])
    ocr = contract.result_message(device="cam-01", pipeline="ppocr", models=["det", "rec"], source="shelf.jpg",
                                  seq=2, latency_ms={"pre": 1, "infer": 2, "post": 3},
                                  results=[{"text": "牛奶 2.99", "score": 0.98, "box": [[0, 0], [1, 0], [1, 1], [0, 1]]}])

    sink = SerialSink(SerialSinkConfig(port=str(link), **FAST_RETRY))
    sink.write(detections)
    sink.write(ocr)
    wait_until(lambda: len(device.lines()) == 2, 20, "two JSON lines on the device")
    first, second = (json.loads(line) for line in device.lines())
    assert (first["id"], first["seq"], first["count"], first["labels"], first["top"], first["score"]) == \
        (detections["id"], 1, 3, ["person", "bus"], "bus", 0.93)
    assert "results" not in first and (second["labels"], second["top"]) == (["牛奶 2.99"], "牛奶 2.99")
    sink.close()

    text = SerialSink(SerialSinkConfig(port=str(link), format="{pipeline} {count} {labels} {score:.2f}",
                                       line_end="crlf", **FAST_RETRY))
    text.write(detections)
    wait_until(lambda: len(device.lines()) == 3, 20, "the template line")
    assert device.lines()[2] == "ppdet 3 person,bus 0.93\r"
    text.close()
    assert (sink.sent, text.sent, sink.dropped, text.dropped) == (2, 1, 0, 0)


def test_sink_never_blocks_drops_the_oldest_when_full_and_flushes_on_close(tmp_path, devices):
    link = tmp_path / "usb-display"               # nothing plugged in yet: the link does not exist
    sink = SerialSink(SerialSinkConfig(port=str(link), queue_size=5, **FAST_RETRY))
    for seq in range(1, 21):
        sink.write(detection_message(seq, [("dog", 0.5)]))
    assert (sink.pending, sink.dropped, sink.sent) == (5, 15, 0)

    device = devices(link)
    wait_until(lambda: len(device.lines()) == 5, 20, "the five newest lines once the device is there")
    assert [json.loads(line)["seq"] for line in device.lines()] == [16, 17, 18, 19, 20]

    for seq in range(21, 24):
        sink.write(detection_message(seq, [("cat", 0.6)]))
    sink.close()                                   # returns once the queue reached the port
    assert (sink.sent, sink.dropped, sink.pending) == (8, 15, 0)
    wait_until(lambda: len(device.lines()) == 8, 20, "the lines written before close to be read")
    assert [json.loads(line)["seq"] for line in device.lines()[5:]] == [21, 22, 23]


def test_sink_reconnects_when_the_device_is_unplugged_and_replugged(tmp_path, devices):
    link = tmp_path / "usb-serial-by-id"
    first = devices(link)
    sink = SerialSink(SerialSinkConfig(port=str(link), **FAST_RETRY))
    sink.write(detection_message(1, [("car", 0.8)]))
    wait_until(lambda: len(first.lines()) == 1, 20, "line 1 on the first device")

    first.unplug()
    sink.write(detection_message(2, [("car", 0.7)]))        # fails on the dead port and stays queued
    wait_until(lambda: sink.outages == 1 and not sink.connected, 20, "the sink to notice the unplug")
    sink.write(detection_message(3, [("car", 0.6)]))
    assert sink.pending == 2

    second = devices(link)
    wait_until(lambda: len(second.lines()) == 2, 20, "the queued lines on the replugged device")
    assert [json.loads(line)["seq"] for line in second.lines()] == [2, 3]
    assert (sink.sent, sink.dropped, sink.outages, sink.connected) == (3, 0, 1, True)
    sink.close()


@pytest.mark.parametrize("template, words", [
    ("{pipeline.__class__}", "is not one of"),
    ("{count} {colour}", "'{colour}' is not one of"),
    ("{labels:d}", "cannot be filled"),
])
def test_sink_templates_only_fill_known_fields(template, words):
    with pytest.raises(ValidationError, match=words):
        SerialSinkConfig(port="/dev/ttyUSB0", format=template)


# --- the trigger ------------------------------------------------------------------------------------------

def test_serial_trigger_takes_the_next_file_per_trigger_line_across_an_unplug(tmp_path, shared_dir, devices):
    folder, link = tmp_path / "in", tmp_path / "usb-plc"
    folder.mkdir()
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    for name, picture in zip(names, DISTINCT):
        shutil.copy(shared_dir / "images" / picture, folder / name)
    first = devices(link)
    source = open_source({"type": "serial", "port": str(link), "trigger": "SNAP", **FAST_RETRY,
                          "grab": {"type": "folder", "path": str(folder), "settle_s": 0.05}})
    try:
        assert isinstance(source, SerialTriggerSource) and source.live and source.connected
        wait_until(lambda: source.ready, 20, "the folder's first file to settle")
        first.send(b"HELLO\nSNAP\n")                               # only the trigger line counts
        frame = take(source)
        assert frame.source == f"{folder / 'a.jpg'} (trigger 1)" and source.triggers == 1
        assert frame.load().shape[2] == 3 and frame.key.startswith(str(folder / "a.jpg"))

        first.send(b"SNAP\r\nSNAP\n")                              # faster than the pipeline takes them
        wait_until(lambda: source.triggers == 3, 20, "two more triggers")
        assert take(source).source == f"{folder / 'c.jpg'} (trigger 3)" and source.dropped == 1

        first.unplug()
        wait_until(lambda: source.outages == 1 and not source.connected, 20, "the trigger to notice the unplug")
        second = devices(link)
        wait_until(lambda: source.connected, 20, "the trigger port to reopen")
        second.send(b"SNAP\n")
        assert take(source).source == f"{folder / 'd.jpg'} (trigger 4)"

        second.send(b"SNAP\n")                                     # nothing left in the folder
        wait_until(lambda: source.triggers == 5, 20, "the fifth trigger")
        assert (source.missed, source.next_frame()) == (1, None)
    finally:
        source.close()


def test_serial_trigger_grabs_what_a_stream_shows_now(tmp_path, shared_dir, servers, devices):
    images = real_images(shared_dir)
    _, make = servers
    server = make(images)
    link = tmp_path / "button"
    device = devices(link)
    source = open_source(f"serial:{link}?stream={server.url()}&baud=9600")   # any line triggers
    try:
        wait_until(lambda: source.ready, 30, "the stream's first frame")
        device.send(b"go\n")
        frame = take(source)
        shown = re.fullmatch(rf"{re.escape(server.url())}#frame=(\d+) \(trigger 1\)", frame.source)
        assert shown and nearest(frame.load(), images) == int(shown.group(1)) % len(images)
        assert source.config.baud == 9600 and source.missed == 0
    finally:
        source.close()


def test_missing_serial_port_is_a_user_error(tmp_path):
    with pytest.raises(SourceError, match=r"serial port .*ttyGONE: no such device"):
        open_source(f"serial:{tmp_path / 'ttyGONE'}?folder={tmp_path}")
