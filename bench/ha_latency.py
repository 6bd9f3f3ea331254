"""Home Assistant as its users see the daemon: entities per device, and the seconds from a result to
Home Assistant's state change.

A real Home Assistant 2024.3 (its own venv, `tests/home_assistant.py`), the test mosquitto, and the
daemon running PP-PicoDet (ONNX FP32) on a watched folder. Each round copies a picture into the
folder, alternating two pictures with different object counts so the objects sensor changes every
time, and reads:

- result -> HA: Home Assistant's `last_updated` of the objects sensor minus the result's own `ts`
  (both clocks are this machine's; no polling error: Home Assistant stamps the state when it writes it);
- file -> HA: from the copy to that `last_updated` (adds the folder poll, decoding and inference).

Run it under the heavy lock: `flock /tmp/heavy.lock python bench/ha_latency.py [--rounds 30]`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.broker import LocalBroker, free_port  # noqa: E402
from edge.daemon import contract  # noqa: E402
from tests.conftest import DaemonProcess, Subscriber  # noqa: E402
from tests.edge.ha_support import convert_picodet  # noqa: E402
from tests.home_assistant import HomeAssistant, ensure_venv  # noqa: E402

DEVICE = "bench-ha"
PICTURES = ("coco_zidane.jpg", "coco_bus.jpg")


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-ha-bench-"))
    python = ensure_venv()
    (work / "bundle").mkdir()
    bundle = convert_picodet(args.shared, work / "bundle" / "picodet")
    inbox = work / "in"
    inbox.mkdir()
    with LocalBroker(work / "broker") as broker:
        hass = HomeAssistant(work / "ha", free_port(), broker.host, broker.port, python)
        started = time.monotonic()
        hass.start()
        ha_start = time.monotonic() - started
        config = work / "edge.yaml"
        config.write_text(f"""\
device_id: {DEVICE}
broker: {{url: "{broker.url}"}}
state_dir: {work / "state"}
metrics_interval: 5
ha_discovery: true
pipelines:
  - name: door
    bundle: {bundle}
    source: {inbox}
    poll_interval: 0.05
    rules: [{{name: crowd, type: count, label: person, direction: above, value: 2}}]
    home_assistant: {{labels: [person, bus, car]}}
""", encoding="utf-8")
        results = Subscriber(broker, [contract.results_topic(DEVICE, "door")])
        daemon = DaemonProcess([str(config)])
        try:
            daemon.wait_log(r"connected to broker")
            objects = f"sensor.edge_{DEVICE.replace('-', '_')}_door_objects"
            to_ha, file_to_ha = [], []
            for n in range(args.rounds + 1):
                name = f"{n:03d}_{PICTURES[n % 2]}"
                copied = time.time()
                shutil.copy(args.shared / "images" / PICTURES[n % 2], inbox / name)
                result = next(m.json() for m in results.wait_for(results.topics[0], n + 1, timeout=60)
                              if m.json()["source"].endswith(name))
                state = hass.wait_state(objects, str(len(result["results"])), timeout=30)
                if n == 0:
                    continue        # the first round also waits for discovery and the model's first run
                to_ha.append(seconds(state["last_updated"]) - seconds(result["ts"]))
                file_to_ha.append(seconds(state["last_updated"]) - copied)
                time.sleep(0.3)
            entities = hass.entities_of(f"edge_{DEVICE}")
        finally:
            daemon.terminate()
            results.close()
            hass.stop()
    by_component: dict[str, int] = {}
    for entity_id in entities:
        by_component[entity_id.split(".")[0]] = by_component.get(entity_id.split(".")[0], 0) + 1
    print(f"Home Assistant 2024.3 started in {ha_start:.1f} s")
    print(f"entities per device: {len(entities)} ({', '.join(f'{v} {k}' for k, v in sorted(by_component.items()))}) "
          "for one detection pipeline, 1 rule, 3 count labels, image on")
    print(f"result -> HA state ({len(to_ha)} rounds): {percentiles(to_ha)}")
    print(f"file copied -> HA state: {percentiles(file_to_ha)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
