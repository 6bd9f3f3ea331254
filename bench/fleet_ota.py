"""A group OTA of a whole fleet on one broker: N real daemons (`python -m edge run CONFIG`, default 50), each
with `group:` and `ota:` in its config, one pipeline on the PP-LCNet FP32 bundle (installed as version 1 in
its A/B slots) and a folder source fed one picture every few seconds, so the health check has frames.

Then, as an operator would: `edge fleet ls --json`, and `edge ota push v2.edgepkg --group fleet --canary 2
--json` (the real CLI, in its own process). Prints the package size, the time to bring every daemon online,
what `edge fleet ls` saw, the rollout's wall time (canaries, then the rest), each device's outcome, the
messages and bytes on the wire (counted by a subscriber on the OTA topics, and the operator's own count),
the daemons' memory, and the version `current` names on every device after. Exits 1 unless all N end
`done` on version 2.

    python bench/fleet_ota.py [--devices 50] [--every 3] [--stagger 1]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.broker import LocalBroker  # noqa: E402
from edge.ota.slots import Slots  # noqa: E402
from edge.packaging import install_package  # noqa: E402
from runtimes.errors import EdgeError  # noqa: E402
from tests.edge.fleet_support import fleet_cli  # noqa: E402
from tests.edge.lcnet_bundle import lcnet_fp32_bundle  # noqa: E402
from tests.edge.ota_support import Feeder, make_packages  # noqa: E402

SHARED = ROOT.parent / "shared"
PICTURE = SHARED / "images" / "cls_img_rot0_demo.jpg"
GROUP = "fleet"
STAMP = re.compile(r"^\[\s*([\d.]+)s\] (.*)$")


class FleetBenchError(EdgeError):
    """The fleet did not come up, or the rollout did not end with every device on the new version."""


class FleetDaemon:
    """One device: version 1 in its slot, a config with `group:` and `ota:`, a fed folder, a real daemon."""

    def __init__(self, root: Path, device_id: str, packages, url: str, args: argparse.Namespace):
        self.id, self.root = device_id, root
        bundles, inbox = root / "bundles", root / "in"
        inbox.mkdir(parents=True)
        install_package(packages.v1, bundles, packages.trusted_dir)
        self.slots = Slots(bundles, packages.name)
        self.slots.switch("1", None)
        self.config, self.log = root / "edge.yaml", root / "daemon.log"
        self.config.write_text(
            f"device_id: {device_id}\nbroker: {{url: '{url}'}}\nstate_dir: {root / 'state'}\n"
            f"bundles_dir: {bundles}\nmetrics_interval: 30\ngroup: {GROUP}\n"
            f"ota: {{trusted_keys: [{packages.trusted_dir}], health_frames: {args.health_frames}, "
            f"health_timeout: {args.health_timeout}}}\n"
            "pipelines:\n"
            f"  - {{name: cls, bundle: {self.slots.link}, source: {{type: folder, path: {inbox}}}, "
            "poll_interval: 0.5}\n", encoding="utf-8")
        self.inbox, self.every = inbox, args.every
        self.feeder: Feeder | None = None
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.feeder = Feeder(PICTURE, self.inbox, every=self.every)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        env.pop("EDGE_OTA_CRASH_AT", None)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "edge", "run", str(self.config)], cwd=ROOT,
                                            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise FleetBenchError(f"{self.id}: the daemon exited with {self.process.returncode}: "
                                  f"{self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except (OSError, AttributeError):
            return 0.0
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else 0.0

    def stop(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


KINDS = {"status": "status", "ota": "ota state", "cmd/ota": "offer", "cmd/ota/reply": "reply", "ota/want": "want"}


def kind_of(topic: str) -> str | None:
    """edge/<id>/<rest> -> what it is: offer, reply, want, chunk, ota state, result, status."""
    rest = topic.split("/", 2)[2]
    if rest.startswith("ota/chunk/"):
        return "chunk"
    return "result" if rest.endswith("/results") else KINDS.get(rest)


class WireCounter:
    """Counts what crosses the broker on the OTA topics (and results), per kind: messages and bytes (topic +
    payload), and keeps each device's status and result count. Subscribed at QoS 0: the broker never waits
    for its acknowledgements."""

    FILTERS = ("edge/+/status", "edge/+/+/results", "edge/+/cmd/ota", "edge/+/cmd/ota/reply", "edge/+/ota",
               "edge/+/ota/want", "edge/+/ota/chunk/#")

    def __init__(self, url: str):
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.status: dict[str, str] = {}
        self.results: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fleet-ota-bench-counter")
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe([(f, 0) for f in self.FILTERS])
        self._client.on_message = self._message
        self._client.connect(host, int(port), keepalive=30)
        self._client.loop_start()

    def _message(self, client, userdata, message) -> None:
        kind = kind_of(message.topic)
        device = message.topic.split("/")[1]
        with self._lock:
            if kind == "status":
                self.status[device] = message.payload.decode(errors="replace")
            elif kind == "result":
                self.results[device] += 1
            if kind and not message.retain:
                self.messages[kind] += 1
                self.bytes[kind] += len(message.topic) + len(message.payload)

    def snapshot(self) -> tuple[Counter, Counter]:
        with self._lock:
            return Counter(self.messages), Counter(self.bytes)

    def ready(self, devices: list[str]) -> int:
        """How many of `devices` are online and have given a result."""
        with self._lock:
            return sum(self.status.get(d) == "online" and self.results[d] > 0 for d in devices)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def bring_up(fleet: list[FleetDaemon], counter: WireCounter, stagger: float, timeout: float) -> float:
    started = time.monotonic()
    for device in fleet:
        device.start()
        time.sleep(stagger)
        device.check_alive()
    ids = [d.id for d in fleet]
    while counter.ready(ids) < len(fleet):
        if time.monotonic() - started > timeout:
            raise FleetBenchError(f"only {counter.ready(ids)} of {len(fleet)} daemons online with a result "
                                  f"within {timeout:.0f} s")
        for device in fleet:
            device.check_alive()
        time.sleep(0.5)
    return time.monotonic() - started


def fleet_ls(url: str) -> list[dict]:
    proc = fleet_cli("ls", "--mqtt", url, "--json", timeout=120)
    if proc.returncode != 0:
        raise FleetBenchError(f"edge fleet ls exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def group_push(url: str, package: Path, canaries: int, timeout: float) -> tuple[int, dict, list[tuple[float, str]]]:
    """`edge ota push PKG --group fleet --canary N --json`: exit code, its JSON, its timestamped progress lines."""
    argv = [sys.executable, "-m", "edge", "ota", "push", str(package), "--group", GROUP, "--canary", str(canaries),
            "--mqtt", url, "--json", "--timeout", str(timeout)]
    proc = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=2 * timeout + 120)
    lines = [(float(m.group(1)), m.group(2)) for m in map(STAMP.match, proc.stderr.splitlines()) if m]
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise FleetBenchError(f"edge ota push exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.returncode, json.loads(proc.stdout), lines


def phase_times(lines: list[tuple[float, str]]) -> tuple[float, float, float]:
    """(group found, canaries phase, rest phase) in seconds, from the push's own progress lines."""
    first = next((t for t, text in lines if text.startswith("canaries first")), 0.0)
    rest = next((t for t, text in lines if text.startswith("now the other")), None)
    end = lines[-1][0] if lines else 0.0
    return first, (rest if rest is not None else end) - first, (end - rest if rest is not None else 0.0)


def wire_lines(before: tuple[Counter, Counter], after: tuple[Counter, Counter]) -> list[str]:
    kinds = ("offer", "reply", "want", "chunk", "ota state", "result", "status")
    msgs = {k: after[0][k] - before[0][k] for k in kinds}
    size = {k: after[1][k] - before[1][k] for k in kinds}
    ota = [k for k in kinds if k not in ("result", "status")]
    return [f"  {k:<10} {msgs[k]:>7} messages {size[k] / 1e6:>9.2f} MB" for k in kinds] + [
        f"  OTA total  {sum(msgs[k] for k in ota):>7} messages {sum(size[k] for k in ota) / 1e6:>9.2f} MB"]


def run(args: argparse.Namespace, work: Path, broker: LocalBroker) -> int:
    (work / "pk").mkdir()
    packages = make_packages(lcnet_fp32_bundle(work / "lcnet"), work / "pk")
    size = packages.v2.stat().st_size
    counter = WireCounter(broker.url)
    fleet = [FleetDaemon(work / "devices" / f"dev-{n:03d}", f"dev-{n:03d}", packages, broker.url, args)
             for n in range(args.devices)]
    try:
        print(f"devices: {args.devices} real daemons, group '{GROUP}', one picture every {args.every:g} s each, "
              f"health_frames {args.health_frames}; package {packages.name} 2: {size / 1e6:.2f} MB", flush=True)
        online_s = bring_up(fleet, counter, args.stagger, args.online_timeout)
        rss = [d.rss_mb() for d in fleet]
        print(f"all online with a result:     {online_s:.1f} s (started {args.stagger:g} s apart); "
              f"daemons' RSS {sum(rss) / 1024:.2f} GB total, {max(rss):.0f} MB max; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        started = time.monotonic()
        rows = fleet_ls(broker.url)
        print(f"edge fleet ls --json:         {len(rows)} devices, "
              f"{sum(r['status'] == 'online' for r in rows)} online ({time.monotonic() - started:.2f} s)", flush=True)
        before, started = counter.snapshot(), time.monotonic()
        code, report, lines = group_push(broker.url, packages.v2, args.canary, args.timeout)
        wall = time.monotonic() - started
        time.sleep(1.0)                       # the last retained states and results still on their way
        after = counter.snapshot()
        found, canary_s, rest_s = phase_times(lines)
        tally = Counter(report["devices"].values())
        print(f"edge ota push --group --canary {args.canary}: exit {code}, {wall:.1f} s wall "
              f"(group found at {found:.1f} s; canaries {canary_s:.1f} s; other {args.devices - args.canary} "
              f"{rest_s:.1f} s){'; stopped: ' + report['stopped'] if report.get('stopped') else ''}")
        print(f"outcomes:                     {dict(tally)}")
        print(f"operator published:           {report['wire_bytes'] / 1e6:.2f} MB = "
              f"{report['wire_bytes'] / (size * args.devices):.3f} x (package x devices)")
        print("published during the push, as a subscriber on the broker saw it (topic + payload):")
        print("\n".join(wire_lines(before, after)))
        rows = {r["device"]: r for r in fleet_ls(broker.url)}
        current = {d.id: os.readlink(d.slots.link) for d in fleet}
        seen = {d: (r.get("slots") or {}).get(packages.name, {}).get("active") for d, r in rows.items()}
        rss = [d.rss_mb() for d in fleet]
        print(f"current after, on disk:       {dict(Counter(current.values()))}; in edge fleet ls: "
              f"{dict(Counter(seen.values()))}; daemons' RSS {sum(rss) / 1024:.2f} GB total, {max(rss):.0f} MB max")
        for chunk in range(0, len(fleet), 10):
            print("  " + "  ".join(f"{d}={current[d]}" for d in list(current)[chunk:chunk + 10]))
        ok = (code == 0 and tally == Counter({"done": args.devices}) and set(current.values()) == {"2"}
              and set(seen.values()) == {"2"} and len(rows) == args.devices)
        if not ok:
            bad = next((d for d in fleet if report["devices"].get(d.id) != "done" or current[d.id] != "2"), fleet[0])
            print(f"FAILED; {bad.id}'s log ends:\n{bad.log_tail()}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        for device in fleet:
            device.stop()
        for device in fleet:
            device.wait()
        counter.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--canary", type=int, default=2)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between pictures, per device")
    parser.add_argument("--stagger", type=float, default=1.0, help="seconds between daemon starts")
    parser.add_argument("--health-frames", type=int, default=2)
    parser.add_argument("--health-timeout", type=float, default=300.0)
    parser.add_argument("--online-timeout", type=float, default=600.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="edge ota push --timeout (per stage)")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="fleet-ota-") as tmp, LocalBroker(Path(tmp) / "broker") as broker:
            return run(args, Path(tmp), broker)
    except EdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
