"""The metrics collector: percentiles, intervals and totals, CPU and temperature readings."""
from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from edge.daemon.metrics import CpuMeter, MetricsCollector, percentile, read_temperature

REPO_ROOT = Path(__file__).resolve().parents[2]


class StepClock:
    """A clock the test moves by hand, so fps is exact without sleeping (no timing in assertions)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metrics_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.METRICS_SCHEMA]).read_text())
    return jsonschema.Draft202012Validator(schema)


def test_percentiles_agree_with_numpy():
    rng = random.Random(7)
    for size in (1, 2, 5, 100, 1001):
        values = sorted(rng.uniform(0, 500) for _ in range(size))
        for q in (50, 95):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q), abs=1e-3)
    assert percentile([], 50) is None


def test_an_interval_gives_fps_percentiles_and_counters_then_starts_afresh(tmp_path):
    clock = StepClock()
    collector = MetricsCollector(clock=clock, thermal_glob=str(tmp_path / "none*"))
    collector.add_pipeline("gate")
    infer_ms = [10.0 + i for i in range(20)]
    for value in infer_ms:
        collector.record({"pre": 1.0, "infer": value, "post": 2.0}, pipeline="door")
    collector.count("dropped_frames", 3, pipeline="door")
    collector.count("spool_dropped", 2)
    clock.now += 4.0
    first = collector.snapshot({"spool_depth": 7})

    assert (first["interval_s"], first["frames"], first["fps"]) == (4.0, 20, 5.0)
    assert first["latency_ms"]["infer"]["p50"] == pytest.approx(np.percentile(infer_ms, 50))
    assert first["latency_ms"]["total"]["p95"] == pytest.approx(np.percentile([v + 3.0 for v in infer_ms], 95))
    assert first["counters"]["dropped_frames"] == {"interval": 3, "total": 3}
    assert first["counters"]["spool_dropped"] == {"interval": 2, "total": 2}
    assert first["pipelines"]["door"]["counters"]["dropped_frames"] == {"interval": 3, "total": 3}
    assert "spool_dropped" not in first["pipelines"]["door"]["counters"]
    assert first["pipelines"]["gate"]["frames"] == 0                    # listed before its first frame
    assert first["spool_depth"] == 7 and first["temperature_c"] is None

    collector.count("errors", pipeline="door")
    clock.now += 2.0
    second = collector.snapshot()
    assert (second["frames"], second["fps"]) == (0, 0.0)
    assert second["latency_ms"]["infer"] == {"p50": None, "p95": None}
    assert second["counters"]["dropped_frames"] == {"interval": 0, "total": 3}
    assert second["pipelines"]["door"]["counters"]["errors"] == {"interval": 1, "total": 1}
    for snapshot in (first, second):
        metrics_validator().validate(json.loads(contract.message_json(
            contract.metrics_message(device="cam-1", snapshot=snapshot))))


def test_total_latency_is_taken_when_given():
    collector = MetricsCollector()
    collector.record({"pre": 1.0, "infer": 2.0, "post": 3.0, "total": 9.5})
    assert collector.snapshot()["latency_ms"]["total"]["p50"] == 9.5


def test_unknown_extra_fields_are_refused():
    with pytest.raises(ValueError, match="unknown metrics field"):
        MetricsCollector().snapshot({"spool": 3})


def test_records_from_several_threads_all_count():
    collector = MetricsCollector()

    def feed() -> None:
        for _ in range(2000):
            collector.record({"pre": 1.0, "infer": 1.0, "post": 1.0}, pipeline="p")
            collector.count("errors", pipeline="p")

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = collector.snapshot()
    assert snapshot["frames"] == snapshot["pipelines"]["p"]["frames"] == 8000
    assert snapshot["counters"]["errors"]["total"] == 8000


def test_temperature_is_the_hottest_readable_thermal_zone(tmp_path):
    for name, text in [("thermal_zone0", "45500\n"), ("thermal_zone1", "61250\n"), ("thermal_zone2", "garbage\n")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "temp").write_text(text)
    assert read_temperature(str(tmp_path / "thermal_zone*" / "temp")) == 61.2
    assert read_temperature(str(tmp_path / "absent*" / "temp")) is None


def test_this_machine_reports_a_plausible_temperature_or_none():
    value = read_temperature()
    assert value is None or -40.0 <= value <= 150.0


def test_cpu_meter_sees_the_work_this_process_did():
    meter = CpuMeter()
    total = 0
    for i in range(3_000_000):       # CPU work, not a sleep: the process's CPU time must grow
        total += i * i
    sample = meter.sample()
    assert total > 0
    assert sample["process_percent"] > 0
    assert sample["cores"] >= 1
    assert all(sample[k] is None or sample[k] >= 0 for k in ("load_1m", "load_5m", "load_15m"))
