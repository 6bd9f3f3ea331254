"""`seq` goes on across daemon restarts: the ledger in the state folder keeps each pipeline's last number.

Two runs of the real daemon (a list source, so each run ends by itself) with one state folder and a real
mosquitto: the second run's inputs are numbered after the first run's, results and errors alike.
"""
from __future__ import annotations

from pathlib import Path

from edge.daemon import contract

DEVICE, PIPELINE = "cam-seq", "batch"


def run_once(tmp_path: Path, listing: Path, bundle: Path, broker, edge_daemon) -> None:
    daemon = edge_daemon([str(bundle), "--source", f"list:{listing}", "--mqtt", broker.url, "--device-id", DEVICE,
                          "--pipeline", PIPELINE, "--state-dir", str(tmp_path / "state"), "--metrics-interval", "0"])
    assert daemon.process.wait(timeout=90) == 0, daemon.log
    assert "Traceback" not in daemon.log


def test_seq_continues_after_a_restart(tmp_path, shared_dir, ocr_bundle_dir, mqtt_broker, mqtt_subscriber,
                                       edge_daemon):
    images = shared_dir / "images"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(f"{images / 'ocr_word_en_10.png'}\n{images / 'ocr_word_ch_1.jpg'}\n")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((images / "coco_dog.jpg").read_bytes()[:2000])      # an error takes a number too
    second.write_text(f"{broken}\n{images / 'ocr_1.jpg'}\n")
    results, errors = contract.results_topic(DEVICE, PIPELINE), contract.errors_topic(DEVICE, PIPELINE)
    sub = mqtt_subscriber(mqtt_broker, [results, errors])

    run_once(tmp_path, first, ocr_bundle_dir, mqtt_broker, edge_daemon)
    assert [m.json()["seq"] for m in sub.wait_for(results, 2)] == [1, 2]
    run_once(tmp_path, second, ocr_bundle_dir, mqtt_broker, edge_daemon)

    assert [m.json()["seq"] for m in sub.wait_for(errors, 1)] == [3]
    assert [m.json()["seq"] for m in sub.wait_for(results, 3)] == [1, 2, 4]
