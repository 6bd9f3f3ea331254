"""Fuzz targets that need no daemon: daemon config files through `edge run --check`, bundle manifests through
`edge inspect` and Bundle.open/load_task (and one frame), pictures through `edge infer`, serial trigger lines
through a real SerialTriggerSource on a pty. Each target is a strategy of inputs and a check of one input
(or of a batch) returning Outcomes; tests and bench/fuzz.py drive them with their own counts."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from hypothesis import strategies as st
from PIL import Image

from runtimes.errors import EdgeError
from tests.conftest import REPO_ROOT

from .fuzz_support import GOOD_PICTURE, IMAGES, LogWatch, Outcome, judge, judge_cli, judge_exit, manifest_of, \
    mutated_bytes, mutated_tree

# --- daemon config files ------------------------------------------------------------------------------------


def config_base(bundle: Path, folder: Path) -> dict[str, Any]:
    """A valid config using most of what docs/config.md describes, with paths that exist under `folder`."""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    (folder / "list.txt").write_text(f"{GOOD_PICTURE}\n", encoding="utf-8")
    return {
        "device_id": "cam-07",
        "broker": {"url": "mqtt://127.0.0.1:1883", "username": "cam-07", "password": "secret",
                   "protocol": "3.1.1", "keepalive": 30},
        "state_dir": str(folder / "state"), "bundles_dir": str(bundle.parent), "metrics_interval": 60,
        "ha_discovery": True, "drain_timeout": 10,
        "spool": {"max_messages": 100000, "max_mb": 100, "synchronous": "normal"},
        "pipelines": [
            {"name": "doors", "bundle": str(bundle), "source": str(folder / "in"), "poll_interval": 0.5,
             "threshold": 0.6, "rate_limit": 2, "qos": 1,
             "preprocess": {"classifier": {"resize_short": {"size": 256}}},
             "rules": [{"type": "presence", "name": "upright", "label": "0"},
                       {"type": "count", "name": "many", "direction": "above", "value": 3},
                       {"type": "region", "name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1]]}],
             "home_assistant": {"labels": ["0", "180"], "image_interval": 2, "image_width": 640}},
            {"bundle": str(bundle), "source": {"type": "list", "file": str(folder / "list.txt")}, "qos": 0},
        ],
    }


def config_texts(base: dict[str, Any]) -> st.SearchStrategy:
    """YAML text: the base with its tree mutated, or its YAML bytes mutated."""
    text = yaml.safe_dump(base, sort_keys=False).encode()
    as_yaml = mutated_tree(base).map(lambda tree: yaml.safe_dump(tree, sort_keys=False, allow_unicode=True).encode())
    return st.one_of(as_yaml, as_yaml, mutated_bytes(text, max_ops=3))


def check_config(text: bytes, path: Path, logs: LogWatch) -> Outcome:
    """`edge run PATH --check` in this process."""
    path.write_bytes(text)
    return judge_cli(text, ["run", str(path), "--check"], logs)


def check_config_subprocess(text: bytes, path: Path) -> Outcome:
    """`python -m edge run PATH --check` as a user runs it."""
    path.write_bytes(text)
    proc = subprocess.run([sys.executable, "-m", "edge", "run", str(path), "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    return judge_exit(text, proc.returncode, proc.stderr)


# --- bundle manifests ---------------------------------------------------------------------------------------

def manifest_copy(bundle: Path, folder: Path) -> Path:
    """A bundle folder whose model files are hard links to `bundle`'s and whose manifest is a copy."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(bundle, folder, copy_function=os.link)
    (folder / "manifest.json").unlink()            # written per input: its own file, never the original's
    shutil.copyfile(bundle / "manifest.json", folder / "manifest.json")
    return folder


# The parts of a manifest a device acts on; a whole-tree mutation lands in the long lists of pictures mostly.
_FOCUS = [("models", 0, "preprocess"), ("models", 0, "postprocess"), ("models", 0, "input"), ("models", 0, "labels"),
          ("models", 0, "artifacts", 0), ("models", 0), ("runtime",), ("files",), ("samples",)]


@st.composite
def _mutated_part(draw, base: dict) -> dict:
    path = draw(st.sampled_from(_FOCUS))
    tree = json.loads(json.dumps(base))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(mutated_tree(parent[path[-1]]))
    return tree


def manifest_texts(bundle: Path) -> st.SearchStrategy:
    base = manifest_of(bundle)
    as_json = st.one_of(_mutated_part(base), _mutated_part(base), mutated_tree(base)).map(
        lambda tree: json.dumps(tree, indent=2, ensure_ascii=False).encode())
    return st.one_of(as_json, as_json, as_json, mutated_bytes(json.dumps(base, indent=2).encode(), max_ops=3))


def check_manifest(text: bytes, folder: Path, state_dir: Path, logs: LogWatch) -> Outcome:
    """`edge inspect` in this process, then Bundle.open + load_task + one frame: each accepts or refuses clearly."""
    from runtimes.bundle import Bundle
    from runtimes.image import read_image
    from runtimes.tasks import load_task

    (folder / "manifest.json").write_bytes(text)
    inspected = judge_cli(text, ["inspect", str(folder), "--state-dir", str(state_dir)], logs)
    if inspected.crash:
        return inspected

    def load_and_run() -> None:
        task = load_task(Bundle.open(folder))
        task(read_image(GOOD_PICTURE))

    logs.clear()
    loaded = judge(text, load_and_run, (EdgeError,))
    if not loaded.crash and logs.tracebacks:
        loaded = Outcome(text, crash=f"logged with a traceback: {logs.tracebacks[0]}", traceback=True)
    return loaded


# --- pictures -----------------------------------------------------------------------------------------------

def picture_forms(folder: Path) -> list[Path]:
    """Real pictures in the forms runtimes/image.py handles: JPEG (baseline, progressive, CMYK, EXIF), PNG (8/16-bit,
    palette, alpha, grey), WebP, BMP, TIFF (two pages); small, so a mutation reaches the pixel data too."""
    folder.mkdir(parents=True, exist_ok=True)
    small = Image.open(IMAGES / "cls_img_rot0_demo.jpg").convert("RGB")
    small.thumbnail((160, 160))
    exif = Image.Exif()
    exif[0x0112] = 6
    forms = {"word.png": lambda p: shutil.copyfile(IMAGES / "ocr_word_en_10.png", p),
             "word.jpg": lambda p: shutil.copyfile(IMAGES / "ocr_word_ch_1.jpg", p),
             "base.jpg": lambda p: small.save(p, quality=80),
             "progressive.jpg": lambda p: small.save(p, progressive=True),
             "cmyk.jpg": lambda p: small.convert("CMYK").save(p),
             "rotated.jpg": lambda p: small.save(p, exif=exif),
             "palette.png": lambda p: small.convert("P").save(p),
             "alpha.png": lambda p: small.convert("RGBA").save(p),
             "grey.png": lambda p: small.convert("L").save(p),
             "deep.png": lambda p: cv2.imwrite(str(p), np.asarray(small)[..., ::-1].astype(np.uint16) * 257),
             "photo.webp": lambda p: small.save(p, quality=70),
             "photo.bmp": lambda p: small.save(p),
             "pages.tiff": lambda p: small.save(p, save_all=True, append_images=[small.convert("L")])}
    paths = []
    for name, make in forms.items():
        make(folder / name)
        paths.append(folder / name)
    return paths


@st.composite
def _flipped(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for at in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=12)):
        buf[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(buf)


def mutated_pictures(forms: list[Path]) -> st.SearchStrategy:
    """(suffix, bytes): a real picture with a few bits flipped (anywhere, or in its header), cut short, or with
    bytes set, inserted or deleted."""
    originals = [(p.suffix, p.read_bytes()) for p in forms]

    def mutations(data: bytes) -> st.SearchStrategy:
        return st.one_of(_flipped(data), _flipped(data[:1024]).map(lambda head: head + data[1024:]),
                         st.integers(0, len(data) - 1).map(lambda end: data[:end]), mutated_bytes(data, header=1024))
    return st.sampled_from(originals).flatmap(lambda item: st.tuples(st.just(item[0]), mutations(item[1])))


def write_pictures(pictures: list[tuple[str, bytes]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (suffix, data) in enumerate(pictures):
        paths.append(folder / f"fuzz{index:05d}{suffix}")
        paths[-1].write_bytes(data)
    return paths


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")      # the log's own lines
# What libpng and libjpeg print to stderr themselves while OpenCV decodes a corrupt file (outside Python, so
# edge cannot turn it into its own line); the one `edge infer: error:` line per picture still follows.
DECODER_CHATTER = ("libpng error: ", "libpng warning: ", "Corrupt JPEG data: ", "Premature end of JPEG file")


def check_infer(bundle: Path, paths: list[Path], state_dir: Path) -> list[Outcome]:
    """`edge infer BUNDLE IMAGE... --json` in a child process (a native crash must not take the tests with it):
    each picture gets a JSON line on stdout or one `edge infer: error:` line on stderr naming it."""
    proc = subprocess.run([sys.executable, "-m", "edge", "infer", str(bundle), *map(str, paths), "--json",
                           "--state-dir", str(state_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    results = {json.loads(line)["source"] for line in proc.stdout.splitlines() if line.startswith("{")}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge infer: error: ")]
    stray = [line for line in proc.stderr.splitlines() if line.strip() and line not in errors
             and not LOG_LINE.match(line) and not line.startswith(DECODER_CHATTER)]
    outcomes = []
    for path in paths:
        said = [line for line in errors if str(path) in line]
        if str(path) in results and not said:
            outcomes.append(Outcome(path.name))
        elif len(said) == 1 and str(path) not in results:
            outcomes.append(Outcome(path.name, error=said[0]))
        else:
            outcomes.append(Outcome(path.name, crash=f"{len(said)} error line(s), result: {str(path) in results}; "
                                                     f"exit {proc.returncode}; stderr {proc.stderr[-600:]!r}",
                                    traceback="Traceback" in proc.stderr))
    if stray or proc.returncode not in (0, 2):
        outcomes.append(Outcome("the batch", crash=f"exit {proc.returncode}, stray stderr {stray[:3]!r}",
                                traceback="Traceback" in proc.stderr))
    return outcomes


# --- serial trigger lines -----------------------------------------------------------------------------------

TRIGGER = "SNAP"


def serial_lines() -> st.SearchStrategy:
    """A burst of lines as a PLC, a noisy cable or a wrong baud rate sends them (each under 200 bytes)."""
    near = st.sampled_from([TRIGGER, f" {TRIGGER} ", f"{TRIGGER}\r", "snap", f"{TRIGGER}\x00", f"\ufeff{TRIGGER}",
                            f"{TRIGGER}\u00a0", f"\x1b[A{TRIGGER}", TRIGGER * 2, "", "\r", "\t"]).map(str.encode)
    line = st.one_of(near, st.binary(max_size=120), st.text(max_size=40).map(str.encode),
                     mutated_bytes(TRIGGER.encode(), max_ops=2))
    return st.lists(line, min_size=1, max_size=12)


def triggers_in(stream: bytes) -> tuple[int, int]:
    """(lines equal to the trigger, non-empty lines) of a stream of complete lines, as a user reads the docs."""
    lines = [raw.decode("utf-8", "replace").strip() for raw in stream.split(b"\n")[:-1]]
    return sum(line == TRIGGER for line in lines), sum(bool(line) for line in lines)


class SerialBench:
    """Two real SerialTriggerSources on ptys, one firing on TRIGGER, one on any line; both grab from a folder."""

    def __init__(self, folder: Path):
        from edge.daemon.sources import open_source

        from .test_serial import PtyDevice
        (folder / "grab").mkdir(parents=True, exist_ok=True)
        self.devices = [PtyDevice(folder / "plc"), PtyDevice(folder / "button")]
        self.sources = [open_source({"type": "serial", "port": str(folder / "plc"), "trigger": TRIGGER,
                                     "grab": f"folder:{folder / 'grab'}"}),
                        open_source({"type": "serial", "port": str(folder / "button"),
                                     "grab": f"folder:{folder / 'grab'}"})]

    def check(self, lines: list[bytes], logs: LogWatch) -> Outcome:
        stream = b"\n".join(lines) + b"\n"
        wanted = [n + 1 for n in triggers_in(stream)]          # +1: the closing trigger line below
        before = [s.triggers for s in self.sources]
        logs.clear()
        for device in self.devices:
            device.send(stream + TRIGGER.encode() + b"\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(s.triggers - b < w for s, b, w in zip(self.sources, before, wanted)):
            time.sleep(0.002)
        got = [s.triggers - b for s, b in zip(self.sources, before)]
        alive = all(s._thread.is_alive() for s in self.sources)
        if got != wanted or not alive or logs.tracebacks:
            return Outcome(lines, crash=f"triggers {got}, wanted {wanted}; readers alive {alive}; "
                                        f"tracebacks {logs.tracebacks[:1]}", traceback=bool(logs.tracebacks))
        return Outcome(lines)

    def close(self) -> None:
        for source in self.sources:
            source.close()
        for device in self.devices:
            device.unplug()

