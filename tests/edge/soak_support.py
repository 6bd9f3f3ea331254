"""The daemon at full rate for a long time, watched from outside: shared by tests/edge/test_soak.py
(3 minutes in CI) and bench/soak.py (an hour).

A real mosquitto, the daemon as its own process (`python -m edge.daemon CONFIG`) on a folder source, and
a consumer that recycles the folder forever: each result that arrives names its picture, which is then
deleted and replaced by a copy under a new name, so the folder always holds `backlog` pictures and the
daemon never waits for input (the folder source takes each name once; a new name is a new input).
Every `interval` seconds the daemon's RSS, open file descriptors and threads are read from /proc/<pid>,
its spool depth from its own metrics message, and images/s from the results that arrived.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.broker import LocalBroker
from edge.daemon import contract
from tests.conftest import REPO_ROOT, SHARED_DIR

DEVICE, PIPELINE = "soak", "soak"
# Pictures of different sizes (12 KB to 160 KB), so decoding and resizing allocate differently each frame.
PICTURES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "coco_dog.jpg", "ocr_11.jpg", "ocr_word_ch_1.jpg")


@dataclass
class ProcessSample:
    rss_kb: int
    fds: int
    threads: int


def sample_process(pid: int) -> ProcessSample:
    """What /proc says about `pid` now: resident memory, open file descriptors, threads."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return ProcessSample(int(fields["VmRSS"][0]), len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"][0]))


@dataclass
class Minute:
    """One sample of the run (a minute in the bench; shorter in the CI test)."""
    at_s: float
    process: ProcessSample
    spool_depth: int | None
    images_per_s: float
    results: int            # results received since the start
    db_mb: float            # the state folder's database with its WAL


class Recycler:
    """An MQTT consumer of the daemon's results and metrics that keeps its folder full of new pictures."""

    def __init__(self, broker: LocalBroker, folder: Path, backlog: int):
        self.folder, self.backlog = folder, backlog
        self.results = self.errors = 0
        self.spool_depth: int | None = None
        self._names = itertools.count()
        self._pictures = itertools.cycle([SHARED_DIR / "images" / name for name in PICTURES])
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{uuid.uuid4().hex[:10]}")
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{contract.TOPIC_ROOT}/{DEVICE}/#", 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the soak consumer could not subscribe")

    def fill(self) -> None:
        for _ in range(self.backlog):
            self._add_picture()

    def _add_picture(self) -> None:
        with self._lock:
            picture, number = next(self._pictures), next(self._names)
        name = f"{number:09d}{picture.suffix}"
        hidden = self.folder / f".{name}"          # the folder source leaves hidden files alone
        shutil.copyfile(picture, hidden)
        hidden.rename(self.folder / name)          # appears whole, in one step

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == contract.metrics_topic(DEVICE):
            self.spool_depth = json.loads(message.payload)["spool_depth"]
            return
        if message.topic == contract.errors_topic(DEVICE, PIPELINE):
            self.errors += 1
        elif message.topic != contract.results_topic(DEVICE, PIPELINE):
            return
        else:
            self.results += 1
        source = Path(json.loads(message.payload)["source"])
        try:
            source.unlink()
        except FileNotFoundError:
            return                                  # a duplicate delivery: its picture was replaced already
        self._add_picture()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(work: Path, bundle: Path, broker_url: str, metrics_interval: float) -> Path:
    folder = work / "in"
    folder.mkdir(parents=True, exist_ok=True)
    config = work / "soak.yaml"
    config.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{broker_url}"}}
state_dir: {work / "state"}
metrics_interval: {metrics_interval}
pipelines:
  - name: {PIPELINE}
    bundle: {bundle}
    source: {{type: folder, path: {folder}, settle_s: 0.05}}
    poll_interval: 0.05
""", encoding="utf-8")
    return config


class SoakRun:
    """`with SoakRun(work, bundle) as run: for minute in run.samples(count, interval): ...`"""

    def __init__(self, work: Path, bundle: Path, backlog: int = 48, metrics_interval: float = 10.0):
        self.work, self.bundle, self.backlog = work, bundle, backlog
        self.metrics_interval = metrics_interval
        self.log_path = work / "daemon.log"
        self.exit_code: int | None = None

    def __enter__(self) -> "SoakRun":
        self.broker = LocalBroker(self.work / "mosquitto").start()
        config = write_config(self.work, self.bundle, self.broker.url, self.metrics_interval)
        self.recycler = Recycler(self.broker, self.work / "in", self.backlog)
        self.recycler.fill()
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w", encoding="utf-8")     # a file: an hour of log lines stays on disk
        self.daemon = subprocess.Popen([sys.executable, "-m", "edge.daemon", str(config)], cwd=REPO_ROOT, env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        self._t0 = time.monotonic()
        return self

    def samples(self, count: int, interval: float) -> Iterator[Minute]:
        """`count` samples, one every `interval` seconds; stops early if the daemon exits."""
        last_results, last_t = 0, time.monotonic()
        for _ in range(count):
            deadline = last_t + interval
            while time.monotonic() < deadline and self.daemon.poll() is None:
                time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
            if self.daemon.poll() is not None:
                return
            now, results = time.monotonic(), self.recycler.results
            yield Minute(round(now - self._t0, 1), sample_process(self.daemon.pid), self.recycler.spool_depth,
                         (results - last_results) / (now - last_t), results, self._db_mb())
            last_results, last_t = results, now

    def _db_mb(self) -> float:
        state = self.work / "state"
        return sum(p.stat().st_size for p in state.glob("state.db*")) / 2**20 if state.is_dir() else 0.0

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __exit__(self, *exc: object) -> None:
        try:
            if self.daemon.poll() is None:
                self.daemon.send_signal(signal.SIGTERM)
                try:
                    self.exit_code = self.daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.daemon.kill()
                    self.daemon.wait()
            else:
                self.exit_code = self.daemon.returncode
        finally:
            self._log.close()
            self.recycler.close()
            self.broker.stop()


@dataclass
class Verdict:
    passed: bool
    line: str


def flat(values: list[int], slack: int) -> bool:
    """No growth: the lowest of the last three samples is at most `slack` above the highest of the first three
    (a file the daemon reads at the moment of a sample is one fd more, not a leak)."""
    return min(values[-3:]) <= max(values[:3]) + slack


def verdict(minutes: list[Minute], settle: int | None = 5, rss_limit: float = 0.05, fd_slack: int = 2,
            thread_slack: int = 0) -> Verdict:
    """RSS growth after the first `settle` samples under `rss_limit` (None: RSS not judged); fds and threads
    flat after the first sample."""
    after_start = minutes[1:] if len(minutes) > 3 else minutes
    fds, threads = [m.process.fds for m in after_start], [m.process.threads for m in after_start]
    fds_ok, threads_ok = flat(fds, fd_slack), flat(threads, thread_slack)
    parts = [f"fds {fds[0]} -> {fds[-1]} ({'flat' if fds_ok else 'GROWING'})",
             f"threads {threads[0]} -> {threads[-1]} ({'flat' if threads_ok else 'GROWING'})"]
    passed = fds_ok and threads_ok
    if settle is not None and len(minutes) > settle:
        base, last = minutes[settle - 1].process.rss_kb, minutes[-1].process.rss_kb
        growth = (last - base) / base
        parts.insert(0, f"RSS {base / 1024:.1f} -> {last / 1024:.1f} MB after sample {settle} "
                        f"({growth:+.1%}, limit {rss_limit:.0%})")
        passed = passed and growth < rss_limit
    else:
        parts.insert(0, "RSS growth not judged" + (f" (needs more than {settle} samples)" if settle else ""))
    return Verdict(passed, f"verdict: {'PASS' if passed else 'FAIL'}: " + "; ".join(parts))


def print_header(write: Callable[[str], None] = print) -> None:
    write(f"{'t (s)':>7} {'RSS MB':>8} {'fds':>4} {'threads':>7} {'spool':>6} {'img/s':>7} {'results':>8} "
          f"{'db MB':>6}")


def print_minute(minute: Minute, write: Callable[[str], None] = print) -> None:
    spool = "-" if minute.spool_depth is None else str(minute.spool_depth)
    write(f"{minute.at_s:>7.0f} {minute.process.rss_kb / 1024:>8.1f} {minute.process.fds:>4} "
          f"{minute.process.threads:>7} {spool:>6} {minute.images_per_s:>7.1f} {minute.results:>8} "
          f"{minute.db_mb:>6.1f}")
