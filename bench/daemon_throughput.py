"""What the daemon costs: its throughput against the bare task loop, and the spool against no spool.

1. Daemon vs bare backend, same bundle (OCR) and same image files, one run: the bare loop reads each
   file and calls the task; the daemon watches a folder of the same files and counts as done when
   the broker (a local mosquitto, QoS 1) has acknowledged every result. Target ratio >= 0.9.
2. Results per second into mosquitto at QoS 1 with the SQLite spool (and ledger) vs with the
   in-memory outbox, on a small fast bundle (PP-LCNet text orientation) so the publishing path
   weighs as much as it can. Target ratio >= 0.8. The publisher alone (no model) is printed too,
   as the ceiling of what the spool costs per message.

Rounds alternate which side of each comparison goes first (the machine is shared and noisy);
medians of the per-round ratios are reported, by wall clock (the target's measure) and by process
CPU time per input (what each side costs, less sensitive to what else runs on the machine). Usage:
    python bench/daemon_throughput.py [--ocr-bundle DIR] [--fast-bundle DIR] [--rounds N] [--copies N]
                                      [--fast-rounds N] [--fast-copies N]
Without bundles it converts ../shared/models into bundles/ (a few minutes the first time);
EDGE_OCR_BUNDLE also names the OCR bundle.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.broker import LocalBroker  # noqa: E402
from edge.daemon.config import short_form_config  # noqa: E402
from edge.daemon.mqtt import MqttPublisher  # noqa: E402
from edge.daemon.outbox import MemoryOutbox  # noqa: E402
from edge.daemon.service import Daemon  # noqa: E402
from edge.daemon.spool import Spool, StateDb  # noqa: E402
from runtimes.bundle import Bundle  # noqa: E402
from runtimes.image import read_image  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

SHARED = ROOT.parent / "shared"
OCR_IMAGES = ["ocr_word_en_10.png", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg", "cls_img_rot0_demo.jpg",
              "cls_img_rot180_demo.jpg"]


def ensure_bundle(path: Path | None, out: Path, sources: list[Path]) -> Path:
    if path:
        return path
    if not (out / "manifest.json").is_file():
        profile = "x86-vnni" if "ocr" in out.name else "x86-avx2"
        subprocess.run([sys.executable, "-m", "edge", "convert", *map(str, sources), "--profile", profile,
                        "--calib", str(SHARED / "images"), "-o", str(out), "--quiet"], cwd=ROOT, check=True)
    return out


def image_files(names: list[str], copies: int, folder: Path) -> list[Path]:
    """`copies` copies of each image under distinct names, interleaved, in a fresh folder."""
    folder.mkdir(parents=True)
    paths = []
    for n in range(copies):
        for name in names:
            target = folder / f"{n:04d}_{name}"
            shutil.copy(SHARED / "images" / name, target)
            paths.append(target)
    return sorted(paths)


class Rate(NamedTuple):
    per_s: float                   # inputs (or messages) per wall-clock second
    cpu_s: float                   # process CPU seconds per input: what it costs, whatever else runs


def bare_rate(bundle: Path, paths: list[Path]) -> Rate:
    """Inputs per second of the task called in a loop on the files (read + run, as the daemon must).

    Set up as the daemon's pipeline is: a freshly opened bundle, one warm-up run, a thread of its
    own (onnxruntime pins its pool threads to cores; where the caller runs matters on a busy box)."""
    task = load_task(Bundle.open(bundle))
    task(read_image(paths[0]))
    spent: list[tuple[float, float]] = []

    def loop() -> None:
        start, cpu = time.perf_counter(), time.process_time()
        for path in paths:
            task(read_image(path))
        spent.append((time.perf_counter() - start, time.process_time() - cpu))

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    return Rate(len(paths) / spent[0][0], spent[0][1] / len(paths))


def daemon_rate(bundle: Path, paths: list[Path], broker: LocalBroker, work: Path, spool: bool,
                in_flight: int = 1) -> Rate:
    """Results per second of the daemon on a folder of `paths`, done when the broker acknowledged all."""
    folder, state = work / "in", work / "state"
    shutil.copytree(paths[0].parent, folder)
    config = short_form_config(bundle=bundle, source=str(folder), mqtt_url=broker.url, device_id="bench",
                               state_dir=state, poll_interval=0.05, metrics_interval=0)
    for pipeline in config.pipelines:
        pipeline.in_flight = in_flight
    daemon = Daemon(config, None if spool else MemoryOutbox())
    for worker in daemon.workers.values():      # one warm-up run, as the bare loop gets
        worker.task(read_image(paths[0]))
    stop, ended = threading.Event(), []

    def watch() -> None:
        worker = next(iter(daemon.workers.values()))
        while worker.counts["results"] + worker.counts["errors"] < len(paths) or len(daemon.outbox):
            time.sleep(0.005)
        ended.append((time.perf_counter(), time.process_time()))
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    start, cpu = time.perf_counter(), time.process_time()
    daemon.serve(stop)
    daemon.shutdown(threading.Event())
    return Rate(len(paths) / (ended[0][0] - start), (ended[0][1] - cpu) / len(paths))


def publisher_rate(broker: LocalBroker, work: Path, spool: bool, count: int = 3000) -> Rate:
    """Messages per second through the publisher alone (result-sized payloads), until all acknowledged."""
    db = StateDb(work / "pub-state") if spool else None
    publisher = MqttPublisher(broker.url, "bench-pub", Spool(db) if db else MemoryOutbox())
    publisher.start()
    while not publisher.connected:
        publisher.pump(timeout=0.05)
    payload = b'{"schema":"edge.result/1","results":[' + b'{"label":"x","score":0.9,"box":[1,2,3,4]},' * 8 + b'{}]}'
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        publisher.publish("edge/bench-pub/p/results", payload)
        publisher.pump()
    left = publisher.drain(timeout=120)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    publisher.stop()
    if db:
        db.close()
    if left:
        raise RuntimeError(f"{left} messages never acknowledged")
    return Rate(count / elapsed, cpu / count)


class Comparison(NamedTuple):
    wall: float                    # median over rounds of (first per s / second per s)
    cpu: float                     # median over rounds of (second CPU per input / first CPU per input)
    first: float                   # median per s of each side, for scale
    second: float


def compare(label: str, rounds: int, first, second) -> Comparison:
    """Both measurements `rounds` times, in turn first-then-second and second-then-first (the machine
    drifts: neither side always goes first); print each round."""
    pairs = []
    for n in range(rounds):
        if n % 2:
            b = second(n)
            a = first(n)
        else:
            a = first(n)
            b = second(n)
        pairs.append((a, b))
        print(f"  {label} round {n + 1}: {a.per_s:.2f} vs {b.per_s:.2f} per s (ratio {a.per_s / b.per_s:.3f}); "
              f"CPU {a.cpu_s * 1000:.2f} vs {b.cpu_s * 1000:.2f} ms each (ratio {b.cpu_s / a.cpu_s:.3f})",
              flush=True)
    return Comparison(statistics.median(a.per_s / b.per_s for a, b in pairs),
                      statistics.median(b.cpu_s / a.cpu_s for a, b in pairs),
                      statistics.median(a.per_s for a, _ in pairs), statistics.median(b.per_s for _, b in pairs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr-bundle", type=Path, default=os.environ.get("EDGE_OCR_BUNDLE") or None)
    parser.add_argument("--fast-bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4, help="copies of each OCR image per round")
    parser.add_argument("--fast-rounds", type=int, default=9, help="rounds of the spool measure (short, noisy)")
    parser.add_argument("--fast-copies", type=int, default=8, help="copies of each shared image per round")
    args = parser.parse_args()
    models = SHARED / "models"
    ocr_parts = ("ch_PP-OCRv4_det", "ch_ppocr_mobile_v2_cls", "ch_PP-OCRv4_rec")
    ocr = ensure_bundle(args.ocr_bundle, ROOT / "bundles" / "ppocr", [models / "PP-OCR" / n for n in ocr_parts])
    fast = ensure_bundle(args.fast_bundle, ROOT / "bundles" / "lcnet-orientation",
                         [models / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"])
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    try:
        with LocalBroker(work / "broker") as broker:
            print(f"1. daemon vs bare task loop: {ocr.name}, {args.copies} x {len(OCR_IMAGES)} images per round")
            paths = image_files(OCR_IMAGES, args.copies, work / "ocr-images")
            daemon_vs_bare = compare(
                "daemon/bare", args.rounds,
                lambda n: daemon_rate(ocr, paths, broker, work / f"ocr-{n}", spool=True),
                lambda n: bare_rate(ocr, paths))

            names = sorted(p.name for p in (SHARED / "images").iterdir() if p.suffix in (".jpg", ".png"))
            print(f"2. spool vs in-memory outbox: {fast.name}, {args.fast_copies} x {len(names)} images per round")
            fast_paths = image_files(names, args.fast_copies, work / "fast-images")
            spool_vs_memory = compare(
                "spool/memory", args.fast_rounds,
                lambda n: daemon_rate(fast, fast_paths, broker, work / f"fast-spool-{n}", spool=True),
                lambda n: daemon_rate(fast, fast_paths, broker, work / f"fast-memory-{n}", spool=False))
            publisher_alone = compare(
                "publisher alone spool/memory", args.rounds,
                lambda n: publisher_rate(broker, work / f"pub-spool-{n}", spool=True),
                lambda n: publisher_rate(broker, work / f"pub-memory-{n}", spool=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    report("daemon vs bare task loop, inputs/s", daemon_vs_bare, 0.9)
    report("results into mosquitto QoS 1, spool vs in-memory", spool_vs_memory, 0.8)
    report("publisher alone, no model (the spool's cost per message)", publisher_alone, None)
    return 0 if daemon_vs_bare.wall >= 0.9 and spool_vs_memory.wall >= 0.8 else 1


def report(what: str, result: Comparison, target: float | None) -> None:
    goal = f" (target >= {target})" if target else ""
    print(f"{what}: ratio {result.wall:.3f} wall-clock{goal}, {result.cpu:.3f} by CPU time per input "
          f"[medians {result.first:.1f} vs {result.second:.1f} per s]")


if __name__ == "__main__":
    sys.exit(main())
