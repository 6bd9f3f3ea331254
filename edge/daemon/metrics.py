"""What the metrics message says every N seconds: throughput, latency percentiles, what was lost,
and how the device itself is doing (CPU, temperature).

The collector is fed from the daemon's thread (`record` per frame, `count` per incident) and read
by `snapshot`, which closes the interval: fps and percentiles describe the last interval only,
counters carry both the interval's and the running total (a dashboard that missed a message still
sees the total move). A lock makes the feed and the snapshot safe across threads.
"""
from __future__ import annotations

import glob
import math
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

STAGES = ("pre", "infer", "post", "total")
# Counters every message carries (0 when nothing happened), so templates never meet a missing key.
DEVICE_COUNTERS = ("dropped_frames", "errors", "spool_dropped")
PIPELINE_COUNTERS = ("dropped_frames", "errors")
# What the daemon may add to a snapshot (documented in docs/mqtt.md, typed in the schema).
EXTRA_FIELDS = ("spool_depth", "spool_capacity", "unacked", "connected", "uptime_s")
MAX_SAMPLES = 50_000          # per stage per interval: bounds memory if nobody asks for a snapshot
THERMAL_GLOB = "/sys/class/thermal/thermal_zone*/temp"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of an ascending list; None when it is empty."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    value = sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)
    return round(value, 3)


class _Window:
    """One interval's latency samples and counters, for the device or one pipeline."""

    def __init__(self, counters: tuple[str, ...]):
        self.samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.frames = 0
        self.interval: dict[str, int] = dict.fromkeys(counters, 0)
        self.total: dict[str, int] = dict.fromkeys(counters, 0)

    def record(self, latency_ms: dict[str, float]) -> None:
        self.frames += 1
        total = latency_ms.get("total", sum(latency_ms.get(s, 0.0) for s in STAGES[:3]))
        for stage in STAGES[:3]:
            value = latency_ms.get(stage)
            if value is not None and len(self.samples[stage]) < MAX_SAMPLES:
                self.samples[stage].append(float(value))
        if len(self.samples["total"]) < MAX_SAMPLES:
            self.samples["total"].append(float(total))

    def count(self, name: str, n: int) -> None:
        self.interval[name] = self.interval.get(name, 0) + n
        self.total[name] = self.total.get(name, 0) + n

    def close(self, seconds: float) -> dict[str, Any]:
        """The interval's numbers; starts the next interval (totals carry on)."""
        latency = {}
        for stage, values in self.samples.items():
            values.sort()
            latency[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95)}
        out = {"frames": self.frames, "fps": round(self.frames / seconds, 3) if seconds > 0 else 0.0,
               "latency_ms": latency,
               "counters": {name: {"interval": self.interval[name], "total": self.total[name]}
                            for name in self.total}}
        self.samples = {stage: [] for stage in STAGES}
        self.frames = 0
        self.interval = dict.fromkeys(self.total, 0)
        return out


class MetricsCollector:
    """Per-frame latencies and incident counters -> the body of an `edge.metrics/1` message.

    `pipeline=None` files a sample or count under the device only; with a pipeline name it counts
    for both the device and that pipeline.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, thermal_glob: str = THERMAL_GLOB):
        self._clock, self._thermal_glob = clock, thermal_glob
        self._lock = threading.Lock()
        self._device = _Window(DEVICE_COUNTERS)
        self._pipelines: dict[str, _Window] = defaultdict(lambda: _Window(PIPELINE_COUNTERS))
        self._runs: dict[str, list[dict[str, Any]]] = {}
        self._connections: dict[str, dict[str, Any]] = {}
        self._since = clock()
        self._cpu = CpuMeter(clock)

    def record(self, latency_ms: dict[str, float], pipeline: str | None = None) -> None:
        """One processed frame's milliseconds per stage (pre/infer/post; total = their sum unless given)."""
        with self._lock:
            self._device.record(latency_ms)
            if pipeline is not None:
                self._pipelines[pipeline].record(latency_ms)

    def count(self, name: str, n: int = 1, pipeline: str | None = None) -> None:
        """Add to a counter (dropped_frames, errors, spool_dropped, or any other name)."""
        with self._lock:
            self._device.count(name, n)
            if pipeline is not None:
                self._pipelines[pipeline].count(name, n)

    def add_pipeline(self, pipeline: str) -> None:
        """List a pipeline from the start, so it appears (with 0 frames) before its first frame."""
        with self._lock:
            self._pipelines[pipeline]   # noqa: B018 - defaultdict creates it

    def set_runs(self, pipeline: str, runs: list[dict[str, Any]]) -> None:
        """What runs each model of `pipeline` (role, artifact, precision, providers), repeated in every
        snapshot so a dashboard reading metrics alone sees e.g. a Jetson that fell back to the CPU."""
        with self._lock:
            self._runs[pipeline] = [dict(run) for run in runs]

    def set_connection(self, pipeline: str, connection: dict[str, Any] | None) -> None:
        """Whether `pipeline`'s camera or stream delivers frames now, its reconnects and why it does not
        (`Source.connection`; None for sources that connect to nothing)."""
        with self._lock:
            if connection is None:
                self._connections.pop(pipeline, None)
            else:
                self._connections[pipeline] = dict(connection)

    def snapshot(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Close the interval: the metrics message body (without schema/id/ts/device), plus `extra`."""
        extra = dict(extra or {})
        unknown = sorted(set(extra) - set(EXTRA_FIELDS))
        if unknown:
            raise ValueError(f"unknown metrics field(s) {unknown}; allowed: {', '.join(EXTRA_FIELDS)}")
        with self._lock:
            now = self._clock()
            seconds, self._since = now - self._since, now
            body: dict[str, Any] = {"interval_s": round(seconds, 3), **self._device.close(seconds)}
            body["pipelines"] = {name: window.close(seconds) for name, window in sorted(self._pipelines.items())}
            for name, runs in self._runs.items():
                if name in body["pipelines"]:
                    body["pipelines"][name]["runs"] = [dict(run) for run in runs]
            for name, connection in self._connections.items():
                if name in body["pipelines"]:
                    body["pipelines"][name]["connection"] = dict(connection)
        body["cpu"] = self._cpu.sample()
        body["temperature_c"] = read_temperature(self._thermal_glob)
        body.update(extra)
        return body


class CpuMeter:
    """System load averages and this process's CPU use since the previous sample (100 = one core busy)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._last = (clock(), _process_cpu_seconds())

    def sample(self) -> dict[str, Any]:
        now, used = self._clock(), _process_cpu_seconds()
        (then, used_before), self._last = self._last, (now, used)
        wall = now - then
        try:
            load = [round(v, 2) for v in os.getloadavg()]
        except OSError:            # not every platform can tell
            load = [None, None, None]
        return {"load_1m": load[0], "load_5m": load[1], "load_15m": load[2],
                "process_percent": round(100.0 * (used - used_before) / wall, 1) if wall > 0 else None,
                "cores": os.cpu_count()}


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def read_temperature(pattern: str = THERMAL_GLOB) -> float | None:
    """The hottest thermal zone in °C (sysfs gives millidegrees); None where the device exposes none."""
    readings = []
    for path in glob.glob(pattern):
        try:
            text = Path(path).read_text().strip()
            readings.append(int(text) / 1000.0)
        except (OSError, ValueError):    # a zone that cannot be read right now (sensor asleep, no access)
            continue
    return round(max(readings), 1) if readings else None
