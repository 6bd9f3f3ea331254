"""A cut network link, end to end: shared by tests/edge/test_network_cut.py and bench/network_cut.py.

The daemon runs in its own network namespace (tests/netns.py) and reaches a real mosquitto, here in the
root namespace, over a veth pair. Pictures arrive in its folder source at a steady pace throughout; the
link is cut for `cut_s` seconds (packets vanish, no connection is reset, so only keepalives can tell)
and restored. A subscriber on the broker's loopback side, unaffected by the cut, collects every result
and the device's status; then the daemon is stopped and its spool read back from the state database.
"""
from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from edge.broker import free_port
from edge.daemon import contract
from tests.conftest import SHARED_DIR, Broker, DaemonProcess, Received, Subscriber
from tests.netns import NetnsLink

DEVICE, PIPELINE = "cam-netns", "orient"
PICTURES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "ocr_word_ch_1.jpg")
BEFORE_CUT = 4                  # results received before the link is cut


@dataclass
class CutOutcome:
    cut_s: float
    keepalive: int
    inputs: list[str]                                   # picture names put in the folder
    ids: dict[str, set[str]]                            # picture name -> message ids its results carried
    received: int                                       # result messages, duplicates included
    queued_away: int                                    # results the daemon spooled while the broker was away
    daemon_noticed: bool                                # the daemon's keepalive declared the broker lost
    will_published: bool                                # the broker declared the daemon gone (its last will)
    replayed_at_reconnect: list[int]                    # "sending N queued message(s)" after each reconnect
    spool_left: int                                     # rows in the spool after the daemon stopped
    drain_s: float                                      # restore -> every result received
    exit_code: int
    log: str = field(repr=False)

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.inputs) - set(self.ids))

    @property
    def ids_differing(self) -> dict[str, set[str]]:
        """Pictures whose results arrived with more than one id: a picture processed twice."""
        return {name: ids for name, ids in self.ids.items() if len(ids) > 1}

    def summary(self) -> str:
        distinct = sum(len(v) for v in self.ids.values())
        return (f"cut {self.cut_s:.0f} s (keepalive {self.keepalive} s): {len(self.inputs)} pictures, "
                f"{self.received} result messages, {distinct} distinct ids, {len(self.missing)} lost, "
                f"{self.received - distinct} duplicate deliveries (same id), {len(self.ids_differing)} pictures "
                f"with differing ids; {self.queued_away} results spooled while away; daemon noticed: "
                f"{self.daemon_noticed}; broker published the last will: {self.will_published}; replayed at "
                f"reconnect: {self.replayed_at_reconnect}; all results in {self.drain_s:.1f} s after restore; "
                f"spool left: {self.spool_left}; exit code {self.exit_code}")


class Feeder:
    """Puts a picture in the folder every `every` seconds (whole, by rename) until stopped."""

    def __init__(self, folder: Path, every: float):
        self.folder, self.every, self.names = folder, every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            picture = SHARED_DIR / "images" / PICTURES[len(self.names) % len(PICTURES)]
            name = f"{len(self.names):05d}{picture.suffix}"
            shutil.copyfile(picture, self.folder / f".{name}")
            (self.folder / f".{name}").rename(self.folder / name)
            self.names.append(name)
            self._stop.wait(self.every)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return list(self.names)


def write_config(work: Path, bundle: Path, broker_url: str, keepalive: int) -> Path:
    (work / "in").mkdir(parents=True, exist_ok=True)
    config = work / "edge.yaml"
    config.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{broker_url}", keepalive: {keepalive}}}
state_dir: {work / "state"}
metrics_interval: 0
drain_timeout: 30
pipelines:
  - {{name: {PIPELINE}, bundle: {bundle}, source: {work / "in"}, poll_interval: 0.2}}
""", encoding="utf-8")
    return config


def spool_rows(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "state.db") as conn:
        return conn.execute("SELECT count(*) FROM spool").fetchone()[0]


def will_then_back(statuses: list[str]) -> bool:
    """An `offline` the daemon did not say itself (it was still running): the broker's last will, then
    `online` again after the reconnect. The daemon's own `offline` at its stop comes last."""
    return any(text == contract.STATUS_OFFLINE and contract.STATUS_ONLINE in statuses[i + 1:]
               for i, text in enumerate(statuses))


def source_name(message: Received) -> str:
    return Path(message.json()["source"]).name


def run_cut(work: Path, bundle: Path, cut_s: float, keepalive: int, feed_every: float = 0.25,
            settle_timeout: float = 180.0) -> CutOutcome:
    """One run: results flow, the link is cut for `cut_s` s while pictures keep coming, then restored."""
    results, status = contract.results_topic(DEVICE, PIPELINE), contract.status_topic(DEVICE)
    with ExitStack() as cleanup:                    # whatever fails, everything started goes, in reverse order
        link = cleanup.enter_context(NetnsLink())
        port = free_port()
        # A second listener on our end of the veth, for the daemon inside the namespace.
        broker = Broker(work / "mosquitto", port=port, extra_config=f"listener {port} {link.host_ip}\n").start()
        cleanup.callback(broker.stop)
        sub = Subscriber(broker, [results, status])
        cleanup.callback(sub.close)
        config = write_config(work, bundle, f"mqtt://{link.host_ip}:{port}", keepalive)
        daemon = DaemonProcess([str(config)], prefix=tuple(link.exec_prefix))
        cleanup.callback(daemon.kill)
        feeder = Feeder(work / "in", feed_every).start()
        cleanup.callback(feeder.stop)
        sub.wait_for(results, BEFORE_CUT, timeout=60, distinct=source_name)
        link.cut()
        time.sleep(cut_s)
        link.restore()
        restored = time.monotonic()
        inputs = feeder.stop()
        sub.wait_for(results, len(inputs), timeout=settle_timeout, distinct=source_name)
        drain_s = time.monotonic() - restored
        exit_code = daemon.terminate()
        messages, statuses = sub.on(results), [m.text for m in sub.on(status)]
    ids: dict[str, set[str]] = defaultdict(set)
    for message in messages:
        ids[source_name(message)].add(message.json()["id"])
    log = daemon.log
    return CutOutcome(
        cut_s=cut_s, keepalive=keepalive, inputs=inputs, ids=dict(ids), received=len(messages),
        queued_away=len(re.findall(r"result seq=\d+ .*broker away: queued", log)),
        daemon_noticed="lost the broker" in log, will_published=will_then_back(statuses),
        replayed_at_reconnect=[int(n) for n in re.findall(r"connected to broker \S+; sending (\d+) queued", log)][1:],
        spool_left=spool_rows(work / "state"), drain_s=drain_s, exit_code=exit_code, log=log)
