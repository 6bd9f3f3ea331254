"""Frames in flight (`in_flight` in a pipeline's config): several frames run at once, results go out in order.

The real daemon on a list source (each run ends by itself) with a real mosquitto and the OCR bundle, once with
`in_flight: 1` and once with `in_flight: 3`: the same results for every picture, seq numbers in input order,
results and errors alike. The throughput it buys is measured in bench/x86_daemon.py, not here.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from edge.daemon import contract

DEVICE, PIPELINE = "cam-flight", "pages"
# Pictures with text in them (the orientation demos are too small for the OCR bundle to find any).
PICTURES = ["ocr_word_en_10.png", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg", "BROKEN", "ocr_11.jpg", "ocr_1.jpg",
            "det_layout.jpg"]


def run(tmp_path: Path, name: str, in_flight: int, listing: Path, bundle: Path, broker, edge_daemon,
        subscriber) -> dict[str, dict]:
    """One daemon run over `listing`: {source: (seq, results or error)} from its MQTT messages, and its log."""
    results, errors = contract.results_topic(DEVICE, PIPELINE), contract.errors_topic(DEVICE, PIPELINE)
    sub = subscriber(broker, [results, errors])
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": DEVICE, "broker": {"url": broker.url}, "state_dir": str(tmp_path / f"state-{name}"),
        "metrics_interval": 0,
        "pipelines": [{"name": PIPELINE, "bundle": str(bundle), "source": f"list:{listing}",
                       "in_flight": in_flight}]}))
    daemon = edge_daemon([str(config)])
    assert daemon.process.wait(timeout=120) == 0, daemon.log
    assert "Traceback" not in daemon.log
    arrived = [m.json() for m in sub.wait_for(results, len(PICTURES) - 1)]
    assert [m["seq"] for m in arrived] == sorted(m["seq"] for m in arrived)      # published in input order
    got = arrived + [m.json() for m in sub.wait_for(errors, 1)]
    return {Path(m["source"]).name: m for m in got}, daemon.log


def test_frames_in_flight_give_the_same_results_in_input_order(tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker,
                                                                mqtt_subscriber, edge_daemon):
    images = shared_dir / "images"
    broken = tmp_path / "BROKEN"
    broken.write_bytes((images / "coco_dog.jpg").read_bytes()[:3000])
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{broken if p == 'BROKEN' else images / p}\n" for p in PICTURES))

    one, one_log = run(tmp_path, "one", 1, listing, ocr_bundle_dir, mqtt_broker, edge_daemon, mqtt_subscriber)
    three, three_log = run(tmp_path, "three", 3, listing, ocr_bundle_dir, mqtt_broker, edge_daemon, mqtt_subscriber)

    assert "3 frames in flight" in three_log and "frames in flight" not in one_log
    for got in (one, three):
        assert [got[p]["seq"] for p in PICTURES] == list(range(1, len(PICTURES) + 1))
        assert "error" in got["BROKEN"] and "results" not in got["BROKEN"]
    for picture in PICTURES:
        if picture != "BROKEN":
            texts = [[r["text"] for r in got[picture]["results"]] for got in (one, three)]
            assert texts[0] == texts[1] and texts[0], (picture, texts)
