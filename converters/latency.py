"""Latency of ONNX models on given inputs, measured so that two models compare fairly.

The conversion host is a shared, noisy machine: a background job during model A's runs and not
during model B's would decide the comparison. So models are timed *alternately* (A B B A A B ...,
each round starting with the model that went second in the last one), every run is timed on its
own, and the median per model is reported. The ratio B/A from the same rounds is what a decision
should use; absolute milliseconds are only indicative.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .runners.base import Runner

Feeds = dict[str, np.ndarray]


def session(path, threads: int = 1, optimize: bool = True):
    """A CPU session as a device runs it (all graph optimisations, `threads` intra-op threads); with
    `optimize` False, the graph runs as written (no fusion that would change float rounding).

    A Runner (converters.runners: an artifact executed elsewhere) is returned as it is."""
    if isinstance(path, Runner):
        return path
    ort.set_default_logger_severity(3)   # silence per-initializer warnings on every load
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Latency:
    median_ms: dict[str, float]        # per model: mean over feeds of each feed's median time
    runs: int                          # timed runs per model

    def ratio(self, candidate: str, reference: str) -> float:
        return self.median_ms[candidate] / self.median_ms[reference]


def compare(models: dict[str, Path | str], feeds: list[Feeds], threads: int = 1, rounds: int = 5,
            warmup: int = 1) -> Latency:
    """Median milliseconds per inference of each model, timed in alternating order on the same feeds."""
    sessions = {name: session(path, threads) for name, path in models.items()}
    names = list(sessions)
    for name in names:
        for feed in feeds[:max(1, warmup)]:
            sessions[name].run(None, feed)
    # times[name][feed index] -> one timing per round; feeds differ in size (det pages), so each
    # feed gets its own median and the model's figure is their mean (a typical inference).
    times = {name: [[] for _ in feeds] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for index, feed in enumerate(feeds):
            for name in order:
                start = time.perf_counter()
                sessions[name].run(None, feed)
                times[name][index].append((time.perf_counter() - start) * 1000.0)
    medians = {n: statistics.fmean(statistics.median(t) for t in per_feed) for n, per_feed in times.items()}
    return Latency(medians, rounds * len(feeds))


def median_latency(path: Path | str, feeds: list[Feeds], threads: int = 1, rounds: int = 5) -> float:
    """Median milliseconds per inference of one model."""
    return compare({"model": path}, feeds, threads, rounds).median_ms["model"]
