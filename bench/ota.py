"""OTA over a local broker, measured: a 10 MB package pushed over MQTT (time, bytes on the wire vs package
size), a bad update's rollback (seconds from the switch to the previous version running again, as the device
measures it, and until its next result arrives), and kill -9 runs at every step of an update (devices left
without a working slot: must be 0).

    python bench/ota.py [--runs 2] [--size-mb 10]

The package is the PP-HumanSeg-Lite FP32 bundle plus an incompressible padding file to reach --size-mb
(model weights do not compress either). Everything runs here: mosquitto on 127.0.0.1, real daemons.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.broker import LocalBroker  # noqa: E402
from edge.daemon import contract  # noqa: E402
from edge.ota.operator import Offer, Operator  # noqa: E402
from tests.conftest import DaemonProcess, Subscriber  # noqa: E402
from tests.edge.ota_support import Device, make_packages, seg_bundle  # noqa: E402
from tests.edge.test_ota import CRASHES  # noqa: E402

SHARED = ROOT.parent / "shared"


def padded(bundle: Path, out: Path, size_mb: float) -> Path:
    shutil.copytree(bundle, out)
    have = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (out / "samples" / "padding.bin").write_bytes(os.urandom(max(int(size_mb * 1e6) - have, 0)))
    return out


def results_after(sub: Subscriber, device: Device, since: int, timeout: float = 60) -> float:
    """Seconds until the device's next result beyond the first `since`."""
    start = time.monotonic()
    sub.wait_for(device.results_topic(), since + 1, timeout)
    return time.monotonic() - start


def push(broker: LocalBroker, package: Path, device: str):
    with Operator(broker.url) as operator:
        started = time.monotonic()
        results = operator.push(Offer.of(package), [device], timeout=300)
        return results[device], operator.wire, time.monotonic() - started


def start(device: Device, crash_at: str | None = None) -> DaemonProcess:
    os.environ.pop("EDGE_OTA_CRASH_AT", None)
    if crash_at:
        os.environ["EDGE_OTA_CRASH_AT"] = crash_at
    try:
        return DaemonProcess([str(device.config)])
    finally:
        os.environ.pop("EDGE_OTA_CRASH_AT", None)


def measure_push_and_rollback(broker: LocalBroker, packages, work: Path) -> None:
    device = Device(work / "dev-main", "bench-1", packages, broker.url, SHARED)
    sub = Subscriber(broker, [device.results_topic(), contract.ota_topic(device.id)])
    daemon = start(device)
    try:
        sub.wait_for(device.results_topic(), 1, 60)
        size = packages.v2.stat().st_size
        outcome, wire, seconds = push(broker, packages.v2, device.id)
        print(f"push {size / 1e6:.1f} MB over MQTT: {outcome.outcome} in {seconds:.1f} s "
              f"(download {outcome.state['timings'].get('download_s')} s, switch to healthy "
              f"{outcome.state['timings'].get('switch_to_healthy_s')} s); "
              f"{wire.messages} messages, {wire.bytes / 1e6:.2f} MB on the wire = {wire.bytes / size:.3f} x the "
              f"package ({wire.chunk_bytes / 1e6:.2f} MB chunk payloads, {outcome.chunks_sent} chunks)")
        seen = len(sub.on(device.results_topic()))
        outcome, _, seconds = push(broker, packages.bad, device.id)
        back = results_after(sub, device, len(sub.on(device.results_topic())))
        print(f"bad update: {outcome.outcome} after {seconds:.1f} s; rollback {outcome.state['timings'].get('rollback_s')}"
              f" s from switch to the previous version restored (device's clock); next result {back:.2f} s after "
              f"the push returned; {len(sub.on(device.results_topic())) - seen} results meanwhile")
    finally:
        daemon.kill()
        device.stop()
        sub.close()


def working_slot(device: Device, broker: LocalBroker, packages) -> bool:
    active = device.slots.active
    if active is None or not (device.bundles / packages.name / active / "manifest.json").is_file():
        return False
    sub = Subscriber(broker, [device.results_topic()])
    try:
        sub.wait_for(device.results_topic(), 1, 60)
        return True
    except BaseException:           # wait_for fails through pytest.fail
        return False
    finally:
        sub.close()


def crash_runs(broker: LocalBroker, packages, work: Path, runs: int) -> None:
    broken, total = 0, 0
    for step, (package, expected) in CRASHES.items():
        for run in range(runs):
            device = Device(work / f"crash-{step}-{run}", f"crash-{step}-{run}", packages, broker.url, SHARED)
            first = start(device, crash_at=step)
            try:
                time.sleep(1.0)
                outcome: dict = {}
                pusher = threading.Thread(target=lambda: outcome.update(
                    result=push(broker, getattr(packages, package), device.id)[0]))
                pusher.start()
                code = first.process.wait(timeout=120)
                again = start(device)
                pusher.join(timeout=300)
                ok = working_slot(device, broker, packages)
                total += 1
                broken += not ok
                ended = outcome.get("result").outcome if outcome.get("result") else "no answer"
                print(f"kill -9 at {step:<13} run {run + 1}: exit {code}, update {ended} (expected {expected}), "
                      f"working slot {device.slots.active if ok else 'NONE'}")
                again.kill()
            finally:
                first.kill()
                device.stop()
    print(f"kill -9 runs: {total}, devices left without a working slot: {broken}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="kill -9 runs per step")
    parser.add_argument("--size-mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp, LocalBroker() as broker:
        work = Path(tmp)
        (work / "seg").mkdir()
        bundle = padded(seg_bundle(SHARED, work / "seg"), work / "padded", args.size_mb)
        (work / "pk").mkdir()
        packages = make_packages(bundle, work / "pk")
        print(f"package {packages.v2.name}: {packages.v2.stat().st_size / 1e6:.2f} MB; broker {broker.url}")
        measure_push_and_rollback(broker, packages, work)
        crash_runs(broker, packages, work, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
