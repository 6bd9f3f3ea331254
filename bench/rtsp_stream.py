"""A camera over RTSP: what the daemon makes of a 15 fps H.264 stream, and how fast it is back after an outage.

Real parts: GStreamer's RTSP server on 127.0.0.1 (tests/rtsp_server.py; Debian packages, see there)
streaming two real pictures at 15 fps, a local mosquitto, `edge run BUNDLE --source rtsp://...` as a
user starts it (default settings), a PicoDet bundle. Printed:

1. results/s at default settings (target: the camera's 15 fps, if the model keeps up on this machine),
   and with `--fps 5`;
2. the daemon's CPU per result (process user+system time over the window / results: decoding every
   frame, inference, publishing);
3. drops reported (metrics `dropped_frames`) vs real (frames the stream delivered that gave no result:
   the frame numbers in the results' `source` say which ones came), over the same window;
4. the time from the camera coming back (the restarted server listening) to the first result of a new
   frame, over several outages (target: under 5 s).

Usage: python bench/rtsp_stream.py [--bundle DIR] [--busy-bundle DIR] [--window S] [--outages N]
Without --bundle it converts ../shared/models/PP-PicoDet/picodet_s_320_coco into an ONNX FP32 bundle,
bundles/picodet_s_320_coco_fp32 (seconds), the artifact every x86 profile ships.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.broker import LocalBroker  # noqa: E402
from edge.daemon import contract  # noqa: E402
from tests.conftest import DaemonProcess, Subscriber, write_fp32_profile  # noqa: E402
from tests.rtsp_server import RtspServer, missing_reason, write_frames  # noqa: E402

SHARED = ROOT.parent / "shared"
DEVICE = "bench-rtsp"
PIPELINE = "cam"
PICTURES = ("coco_bus.jpg", "lite_human.jpg")
FRAME = re.compile(r"#frame=(\d+)$")


def ensure_bundle(path: Path | None) -> Path:
    if path:
        return path
    out = ROOT / "bundles" / "picodet_s_320_coco_fp32"
    if not (out / "manifest.json").is_file():
        profile = write_fp32_profile(Path(tempfile.mkdtemp(prefix="edge-fp32-profile-")))
        subprocess.run([sys.executable, "-m", "edge", "convert",
                        str(SHARED / "models/PP-PicoDet/picodet_s_320_coco/model.onnx"), "--profile", str(profile),
                        "--val", str(SHARED / "images"), "-o", str(out), "--quiet"], cwd=ROOT, check=True)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")     # utime + stime


class Run:
    """One daemon on the stream, and what it published."""

    def __init__(self, bundle: Path, server: RtspServer, broker: LocalBroker, work: Path, extra: list[str]):
        self.sub = Subscriber(broker, [f"edge/{DEVICE}/#"])
        self.arrivals: list[tuple[float, dict]] = []           # (monotonic arrival, result)
        topic = contract.results_topic(DEVICE, PIPELINE)
        previous = self.sub.client.on_message

        def on_message(client, userdata, msg):
            if msg.topic == topic:
                self.arrivals.append((time.monotonic(), json.loads(msg.payload)))
            previous(client, userdata, msg)

        self.sub.client.on_message = on_message
        self.daemon = DaemonProcess([str(bundle), "--source", server.url(), "--mqtt", broker.url, "--device-id",
                                     DEVICE, "--pipeline", PIPELINE, "--state-dir", str(work / "state"),
                                     "--metrics-interval", "5", *extra])

    def metrics(self) -> list[dict]:
        return [m.json() for m in self.sub.on(contract.metrics_topic(DEVICE))]

    def source_events(self) -> list[dict]:
        return [e for e in (m.json() for m in self.sub.on(contract.events_topic(DEVICE, PIPELINE)))
                if e["schema"] == contract.SOURCE_SCHEMA]

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}; daemon log:\n{self.daemon.log[-3000:]}")
            time.sleep(0.01)

    def window(self, seconds: float) -> dict:
        """Results, CPU and drops between two metrics messages at least `seconds` apart."""
        count = len(self.metrics())
        self.wait(lambda: len(self.metrics()) > count, 30, "a metrics message")
        first = self.metrics()[-1]
        start, cpu0 = time.monotonic(), cpu_seconds(self.daemon.process.pid)
        n0 = len(self.arrivals)
        time.sleep(seconds)
        count = len(self.metrics())
        self.wait(lambda: len(self.metrics()) > count, 30, "a metrics message")
        last = self.metrics()[-1]
        elapsed, cpu = time.monotonic() - start, cpu_seconds(self.daemon.process.pid) - cpu0
        taken = self.arrivals[n0:]
        indices = [int(FRAME.search(r["source"]).group(1)) for _t, r in taken]
        delivered = max(indices) - min(indices) + 1
        reported = (last["pipelines"][PIPELINE]["counters"]["dropped_frames"]["total"]
                    - first["pipelines"][PIPELINE]["counters"]["dropped_frames"]["total"])
        return {"seconds": elapsed, "results": len(taken), "per_s": len(taken) / elapsed,
                "cpu_ms": 1000 * cpu / max(len(taken), 1), "cpu_percent": 100 * cpu / elapsed,
                "stream_frames": delivered, "real_not_taken": delivered - len(taken), "reported_dropped": reported,
                "latency_p50": last["pipelines"][PIPELINE]["latency_ms"]["total"]["p50"]}

    def close(self) -> None:
        if self.daemon.process.poll() is None:
            self.daemon.terminate()
        self.sub.close()


def comeback(run: Run, server: RtspServer, rng: random.Random) -> tuple[float, float]:
    """Stop the camera, leave it off 1-4 s, start it: seconds from its listening (and from its spawn) to
    the first result of a frame read after it returned."""
    seen = len(run.source_events())
    server.stop()
    run.wait(lambda: any(e["change"] == "lost" for e in run.source_events()[seen:]), 30, "the loss")
    time.sleep(rng.uniform(1.0, 4.0))
    results_before = len(run.arrivals)
    spawned = time.monotonic()
    server.start()
    listening = time.monotonic()
    run.wait(lambda: any(e["change"] == "reconnected" for e in run.source_events()[seen:]), 30, "the reconnection")
    run.wait(lambda: len(run.arrivals) > results_before, 30, "a result after the return")
    arrived = run.arrivals[results_before][0]
    return arrived - listening, arrived - spawned


def report(label: str, run: Run, window: float) -> None:
    run.wait(lambda: len(run.arrivals) > 0, 60, "the first result")
    time.sleep(3.0)
    w = run.window(window)
    infos = [m.json() for m in run.sub.on(contract.status_info_topic(DEVICE))]
    model = infos[-1]["pipelines"][0]["runs"][0] if infos else {}
    print(f"{label}: {w['per_s']:.2f} results/s over {w['seconds']:.1f} s from a 15 fps stream "
          f"({model.get('artifact')}, {model.get('precision')}); daemon CPU {w['cpu_ms']:.1f} ms per result "
          f"({w['cpu_percent']:.0f} % of a core); latency p50 {w['latency_p50']} ms; "
          f"stream frames in the window {w['stream_frames']}, without a result {w['real_not_taken']}, "
          f"reported dropped_frames {w['reported_dropped']}")


def report_comebacks(run: Run, server: RtspServer, outages: int) -> None:
    rng = random.Random(12)
    times = [comeback(run, server, rng) for _ in range(outages)]
    listening, spawned = [t for t, _ in times], [t for _, t in times]
    print(f"camera back -> first new result over {len(times)} outages: median {statistics.median(listening):.2f} s, "
          f"max {max(listening):.2f} s from the server listening (median {statistics.median(spawned):.2f} s, "
          f"max {max(spawned):.2f} s from its process start); each: " + ", ".join(f"{t:.2f}" for t in listening))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--busy-bundle", type=Path, help="a bundle slower than the camera (e.g. PP-OCR): drops "
                                                         "reported vs real where there are some")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per setting (30)")
    parser.add_argument("--outages", type=int, default=5, help="camera outages for the comeback time (5)")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    bundle = ensure_bundle(args.bundle)
    settings = [("PicoDet, default settings", bundle, []), ("PicoDet, --fps 5 (10 of 15 frames left out on "
                                                            "purpose, not drops)", bundle, ["--fps", "5"])]
    if args.busy_bundle:
        settings.append((f"{args.busy_bundle.name}, default settings", args.busy_bundle, []))
    with tempfile.TemporaryDirectory(prefix="edge-rtsp-bench-") as tmp:
        work = Path(tmp)
        frames = write_frames([SHARED / "images" / name for name in PICTURES], work / "frames")
        with LocalBroker(work / "broker") as broker:
            server = RtspServer(frames, fps=15).start()
            try:
                for index, (label, path, extra) in enumerate(settings):
                    run = Run(path, server, broker, work / f"run{index}", extra)
                    try:
                        report(label, run, args.window)
                        if index == 0 and args.outages:
                            report_comebacks(run, server, args.outages)
                    finally:
                        run.close()
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
