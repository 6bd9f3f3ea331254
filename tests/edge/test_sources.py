"""Sources with real parts: videos written by OpenCV from real images, an HTTP MJPEG stream served on
127.0.0.1 (stopped and restarted to prove reconnect and backoff), the spec grammar, and the errors a
user sees for missing files and devices. RTSP goes through the same StreamSource (OpenCV's FFmpeg
VideoCapture) as HTTP; there is no RTSP server here, so only its spec and retry path are exercised.
There is no camera here either: only the "no such device" error is tested, not capture."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from edge.daemon.sources import (SOURCES, CameraSource, FolderSource, ListSource, SourceError, SourceField,
                                 StreamSource, VideoFileSource, open_source, parse_source_spec)
from runtimes.errors import ConfigError, ImageError

DISTINCT = ("coco_bus.jpg", "coco_dog.jpg", "ocr_1.jpg", "seg_web_human.png")   # tell-apart-able pictures
SIZE = (160, 120)


# --- helpers shared with test_serial.py ---------------------------------------------------------------

def real_images(shared_dir: Path, names: tuple[str, ...] = DISTINCT) -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(shared_dir / "images" / name)), SIZE) for name in names]


def nearest(image: np.ndarray, candidates: list[np.ndarray]) -> int:
    """Index of the candidate `image` is closest to (decoders differ slightly; content does not)."""
    distances = [np.abs(image.astype(np.int16) - c.astype(np.int16)).mean() for c in candidates]
    return int(np.argmin(distances))


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.02)


def take(source, timeout: float = 20.0):
    """The next frame the source hands out, waiting for it."""
    box = []
    wait_until(lambda: box.append(source.next_frame()) or box[-1] is not None, timeout, f"a frame from {source}")
    return box[-1]


class MjpegServer:
    """A network camera stand-in: JPEGs as multipart/x-mixed-replace over HTTP on 127.0.0.1.

    Each connection gets frames 0, 1, 2, ... (image i % len); after `limit` frames it either ends the
    response or, with `hold`, keeps the connection open and silent (a stalled camera)."""

    def __init__(self, images: list[np.ndarray], port: int = 0, interval: float = 0.02,
                 limit: int | None = None, hold: bool = False):
        self.jpegs = [cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for image in images]
        self.interval, self.limit, self.hold = interval, limit, hold
        self.sent = 0
        self.closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/stream.mjpg"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                try:
                    while not server.closing.is_set() and (server.limit is None or index < server.limit):
                        jpeg = server.jpegs[index % len(server.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                        index += 1
                        server.sent += 1
                        server.closing.wait(server.interval)
                    if server.hold:
                        server.closing.wait()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()      # joins the handler threads: their connections are closed


@pytest.fixture
def servers():
    """Factory for MjpegServers, all stopped at teardown."""
    made: list[MjpegServer] = []

    def make(*args, **kwargs) -> MjpegServer:
        made.append(MjpegServer(*args, **kwargs))
        return made[-1]

    yield made, make
    for server in made:
        if not server.closing.is_set():
            server.stop()


# --- the spec grammar -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, kind, fields", [
    ("/data/in", "folder", {"path": Path("/data/in")}),
    ("folder:/data/in?settle_s=2", "folder", {"path": Path("/data/in"), "settle_s": 2.0}),
    ("list:/data/batch.txt", "list", {"file": Path("/data/batch.txt")}),
    ("/data/clip.MKV", "video", {"path": Path("/data/clip.MKV"), "every": 1}),
    ("video:/data/clip?every=5", "video", {"path": Path("/data/clip"), "every": 5}),
    ("video:clip.mp4?fps=2.5", "video", {"fps": 2.5}),
    ("camera:0?width=1280&height=720&fourcc=MJPG", "camera", {"device": 0, "width": 1280, "fourcc": "MJPG"}),
    ("/dev/video2", "camera", {"device": "/dev/video2"}),
    ("rtsp://user:pw@10.0.0.5:554/ch1?subtype=1", "stream", {"url": "rtsp://user:pw@10.0.0.5:554/ch1?subtype=1"}),
    ("https://cam.local/mjpg", "stream", {"url": "https://cam.local/mjpg"}),
])
def test_string_specs_name_their_kind_and_fields(spec, kind, fields):
    config = parse_source_spec(spec)
    assert config.type == kind and SOURCES[kind].config_model is type(config)
    assert {name: getattr(config, name) for name in fields} == fields


def test_serial_trigger_spec_nests_its_grab_source():
    config = parse_source_spec("serial:/dev/ttyUSB0?baud=9600&camera=0&trigger=SNAP")
    assert (config.port, config.baud, config.trigger, config.grab.type, config.grab.device) == \
        ("/dev/ttyUSB0", 9600, "SNAP", "camera", 0)
    url = parse_source_spec("serial:/dev/ttyACM0?stream=http://cam/live?res=low").grab
    assert (url.type, url.url) == ("stream", "http://cam/live?res=low")


@pytest.mark.parametrize("spec, field, words", [
    ("video:a.mp4?every=0", "source.every", "greater than or equal to 1"),
    ("video:a.mp4?every=2&fps=3", "source", "not both"),
    ("camera:0?colour=red", "source.colour", "Extra inputs"),
    ("ftp://host/file", "source", "not a source this edge can read"),
    ("serial:/dev/ttyUSB0?baud=9600", "source.grab", "Field required"),
    ("serial:/dev/ttyUSB0?grab=ftp://x", "source.grab", "not a source"),
    ("list:", "source", "names no file"),
])
def test_bad_specs_raise_one_line_errors_naming_the_field(spec, field, words):
    with pytest.raises(SourceError, match=words) as err:
        parse_source_spec(spec)
    assert isinstance(err.value, ConfigError) and err.value.field == field and "\n" not in str(err.value)


def test_a_config_model_embeds_the_string_or_the_long_form():
    class Pipeline(BaseModel):
        model_config = ConfigDict(extra="forbid")
        source: SourceField

    assert Pipeline(source="video:a.mp4?every=4").source.every == 4
    long = Pipeline(source={"type": "stream", "url": "rtsp://cam/1", "retry_max_s": 5}).source
    assert (long.type, long.retry_max_s) == ("stream", 5)
    with pytest.raises(ValueError, match="every"):
        Pipeline(source={"type": "video", "path": "a.mp4", "every": "x"})


# --- files: folder, list, video ------------------------------------------------------------------------

def write_video(path: Path, fourcc: str, frames: list[np.ndarray], fps: float = 12.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc} to {path.suffix}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("name, fourcc", [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_video_file_hands_out_every_frame_in_order(tmp_path, shared_dir, name, fourcc):
    images = real_images(shared_dir)
    order = [i % len(images) for i in range(14)]
    path = write_video(tmp_path / name, fourcc, [images[i] for i in order])

    source = open_source(str(path))
    assert isinstance(source, VideoFileSource) and not source.live
    frames = []
    while (frame := source.next_frame()) is not None:
        frames.append(frame)
    assert source.finished and source.next_frame() is None
    assert [f.index for f in frames] == list(range(len(order)))
    assert [nearest(f.load(), images) for f in frames] == order
    assert frames[3].source == f"{path}#frame=3" and frames[3].key == frames[3].source


def test_video_every_nth_frame_and_fps_thinning(tmp_path, shared_dir):
    images = real_images(shared_dir)
    order = [i % len(images) for i in range(12)]
    path = write_video(tmp_path / "clip.avi", "MJPG", [images[i] for i in order], fps=12)

    every = open_source(f"video:{path}?every=5")
    taken = [(f.index, nearest(f.load(), images)) for f in iter(every.next_frame, None)]
    assert taken == [(i, order[i]) for i in (0, 5, 10)]
    by_fps = open_source({"type": "video", "path": str(path), "fps": 4})     # 12 fps video -> every 3rd
    assert [f.index for f in iter(by_fps.next_frame, None)] == [0, 3, 6, 9]


def test_video_errors_name_the_file(tmp_path, shared_dir):
    with pytest.raises(SourceError, match=r"video .*missing\.mp4 does not exist"):
        open_source(str(tmp_path / "missing.mp4"))
    fake = tmp_path / "photo.mp4"
    fake.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(str(fake))


def test_list_source_reads_text_and_yaml_lists_in_order(tmp_path, shared_dir):
    images = shared_dir / "images"
    (tmp_path / "broken.jpg").write_bytes((images / "ocr_1.jpg").read_bytes()[:500])
    listing = tmp_path / "batch.txt"
    listing.write_text(f"# today's batch\n{images / 'coco_dog.jpg'}\n\nbroken.jpg\n{images / 'coco_dog.jpg'}\n")
    source = open_source(f"list:{listing}")
    assert isinstance(source, ListSource)
    frames = list(iter(source.next_frame, None))
    assert [Path(f.source).name for f in frames] == ["coco_dog.jpg", "broken.jpg", "coco_dog.jpg"]
    assert source.finished and len({f.key for f in frames}) == 3       # the same image twice: two inputs
    assert frames[0].load().shape == cv2.imread(str(images / "coco_dog.jpg")).shape
    with pytest.raises(ImageError, match="truncated JPEG"):
        frames[1].load()

    yaml_list = tmp_path / "batch.yaml"
    yaml_list.write_text(f"- {images / 'ocr_1.jpg'}\n- broken.jpg\n")
    assert [Path(f.source).name for f in iter(open_source(f"list:{yaml_list}").next_frame, None)] == \
        ["ocr_1.jpg", "broken.jpg"]
    inline = open_source({"type": "list", "paths": [str(images / "coco_bus.jpg")]})
    assert [Path(f.source).name for f in iter(inline.next_frame, None)] == ["coco_bus.jpg"]


def test_list_source_refuses_missing_entries_and_files(tmp_path):
    listing = tmp_path / "batch.txt"
    listing.write_text("# header\ngone.jpg\n")
    with pytest.raises(SourceError, match=r"batch\.txt: line 2: .*gone\.jpg does not exist"):
        open_source(f"list:{listing}")
    with pytest.raises(SourceError, match="cannot read"):
        open_source(f"list:{tmp_path / 'nope.txt'}")


def test_folder_frames_carry_a_file_identity_key(tmp_path, shared_dir):
    (tmp_path / "a.jpg").write_bytes((shared_dir / "images" / "ocr_1.jpg").read_bytes())
    source = open_source(f"folder:{tmp_path}?settle_s=0.05")
    assert isinstance(source, FolderSource)
    frame = take(source)
    size = (tmp_path / "a.jpg").stat().st_size
    assert frame.key.startswith(f"{tmp_path / 'a.jpg'}|{size}|")


# --- camera: no device here ---------------------------------------------------------------------------

def test_missing_camera_is_a_user_error():
    index = next(i for i in range(10, 64) if not Path(f"/dev/video{i}").exists())
    with pytest.raises(SourceError, match=rf"camera {index}: no such device \(/dev/video{index} does not exist\)"):
        open_source(f"camera:{index}")
    assert SOURCES["camera"] is CameraSource
    with pytest.raises(SourceError, match=rf"camera /dev/video{index}: no such device"):
        open_source(f"/dev/video{index}")


# --- streams: a real HTTP MJPEG server ---------------------------------------------------------------------

def test_stream_frames_name_the_stream_without_its_password(shared_dir, servers):
    images = real_images(shared_dir)
    _, make = servers
    server = make(images)
    source = open_source(server.url("viewer:secret@"))
    try:
        assert isinstance(source, StreamSource) and source.live
        frame = take(source)
        assert frame.source.startswith(f"http://viewer:***@127.0.0.1:{server.port}/stream.mjpg#frame=")
        assert "secret" not in frame.source and frame.timestamp is not None and frame.key is None
        assert nearest(frame.load(), images) == frame.index % len(images)
    finally:
        source.close()


def test_live_source_keeps_only_the_newest_frame_and_counts_drops(shared_dir, servers):
    images = real_images(shared_dir)
    _, make = servers
    burst = make(images, interval=0.005, limit=15, hold=True)     # 15 frames, then a silent camera
    source = open_source({"type": "stream", "url": burst.url(), "read_timeout_s": 60})
    try:
        wait_until(lambda: source.grabbed == 15, 30, "the 15 frames of the burst")
        newest = source.next_frame()
        assert newest.index == 14 and nearest(newest.load(), images) == 14 % len(images)
        assert source.dropped == 14 and source.next_frame() is None
    finally:
        burst.stop()            # first: the grabber is blocked reading the silent connection
        source.close()

    steady = make(images, interval=0.01)                          # a pipeline slower than the camera
    source = open_source(steady.url())
    try:
        taken = []
        for _ in range(4):
            frame = take(source)
            assert nearest(frame.load(), images) == frame.index % len(images)   # the picture of that index
            taken.append(frame.index)
            time.sleep(0.2)                                                     # "inference"
        assert taken == sorted(set(taken)) and source.dropped > 0
    finally:
        source.close()


def test_stream_reconnects_with_backoff_after_the_server_goes_away(shared_dir, servers):
    before, after = real_images(shared_dir, DISTINCT[:2]), real_images(shared_dir, DISTINCT[2:])
    _, make = servers
    first = make(before)
    source = open_source({"type": "stream", "url": first.url(), "retry_initial_s": 0.1, "retry_max_s": 0.8,
                          "open_timeout_s": 2, "read_timeout_s": 2})
    try:
        frame = take(source)
        assert nearest(frame.load(), before + after) < 2

        first.stop()
        wait_until(lambda: source.outages == 1 and source.backoff.failures >= 5, 30, "five failed reconnects")
        assert not source.connected
        delays = list(source.backoff.history)[-source.backoff.failures:]
        for attempt, delay in enumerate(delays[:5]):
            base = min(0.1 * 2 ** attempt, 0.8)          # doubling, capped, +-20 % jitter
            assert base * 0.8 <= delay <= base * 1.2, (attempt, delays)

        make(after, port=first.port)                    # the camera is back, showing something else
        wait_until(lambda: (f := source.next_frame()) is not None and nearest(f.load(), before + after) >= 2,
                   30, "a frame from the restarted server")
        assert source.connected and source.outages == 1 and source.grabbed > frame.index + 1
    finally:
        source.close()


def test_rtsp_urls_use_the_same_stream_source_and_retry_when_nothing_answers():
    import socket
    with socket.socket() as probe:                     # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = open_source({"type": "stream", "url": f"rtsp://u:pw@127.0.0.1:{port}/live", "retry_initial_s": 0.05,
                          "retry_max_s": 0.2, "open_timeout_s": 1})
    try:
        assert isinstance(source, StreamSource) and source.name == f"rtsp://u:***@127.0.0.1:{port}/live"
        wait_until(lambda: source.backoff.failures >= 3, 30, "three failed connection attempts")
        assert source.next_frame() is None and not source.connected and source.grabbed == 0
    finally:
        source.close()
