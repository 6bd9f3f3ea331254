"""Which artifacts of one model ship, and why: the fastest candidate that meets the budget, across formats.

Where the conversion host can execute the target (an x86 profile on this x86 host), every candidate that met
the family budget (onnxruntime FP32 / INT8, OpenVINO f32 / bf16 / INT8) is timed again, all of them in the same
alternating rounds (converters/latency.py) at 1 thread and at the profile's threads: each builder timed itself
against onnxruntime FP32 in its own rounds, and numbers from different rounds of a shared, noisy machine do not
compare well enough to choose by. The fastest over both thread counts (speed_score: the geometric mean) ships, with every
passing candidate the profile marks `fallback` behind it (the device runs the first that loads). Where the host
cannot time the target (ARM, Jetson), every candidate that passed ships in the profile's order, as before.

Written per shipped artifact (T = 1 and the profile's threads, e.g. 2 here), measured side by side:
    latency_ms@T, latency_ms_onnxruntime_fp32@T, latency_ratio_vs_onnxruntime_fp32@T
and, for every shipped artifact but the reference, latency_ratio (profile threads) and latency_ratio_1thread, the
keys onnxruntime INT8 always had (it keeps the values from its quantize pass's own rounds).
The candidate table (every candidate: metric, latency, status, why) goes to the manifest's
metrics["candidates"][role]; `edge inspect` prints it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from device_profiles import ArtifactChoice, Profile
from runtimes.errors import ConversionError

from .builders.base import BuildResult
from .latency import compare
from .package import BuiltArtifact, BuiltModel
from .passes.openvino_latency import LATENCY_FEEDS, LATENCY_ROUNDS
from .passes.quantize import thread_counts
from .spec import ExportSource

REFERENCE = "onnxruntime_fp32"
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino", "paddle_lite": "paddle_lite"}


@dataclass
class Candidate:
    choice: ArtifactChoice
    result: BuildResult
    latency_ms: dict[int, float] = field(default_factory=dict)
    status: str = "refused"          # chosen / fallback / not shipped / refused
    why: str = ""

    @property
    def key(self) -> str:
        return f"{RUNTIME_OF_FORMAT[self.choice.format]}_{self.choice.precision}"

    @property
    def artifact(self) -> BuiltArtifact | None:
        return self.result.artifact


def _timed_model(art: BuiltArtifact, threads: int, properties: dict[str, Any]):
    """What converters.latency.compare times for an artifact: an ONNX path, or an OpenVINO runner."""
    if art.format == "onnx":
        return art.path
    if art.format == "openvino":
        from .runners.openvino import OpenVinoRunner
        return OpenVinoRunner(art.path, threads, art.execution_precision, properties)
    raise ConversionError(f"{art.format} artifacts cannot be timed on this host")


def time_side_by_side(passing: list[Candidate], reference: Path, feeds: list[dict], threads: list[int],
                      properties: dict[str, Any], rounds: int = LATENCY_ROUNDS) -> dict[str, dict[int, float]]:
    """Median ms per candidate key and thread count, all candidates and the FP32 reference in the same rounds."""
    measured: dict[str, dict[int, float]] = {}
    for count in threads:
        models = {REFERENCE: reference, **{c.key: _timed_model(c.artifact, count, properties)
                                           for c in passing if c.key != REFERENCE}}
        for name, ms in compare(models, feeds, count, rounds).median_ms.items():
            measured.setdefault(name, {})[count] = round(ms, 3)
    return measured


def latency_keys(ms: dict[int, float], reference: dict[int, float]) -> dict[str, float]:
    keys: dict[str, float] = {}
    for count in sorted(ms):
        keys[f"latency_ms@{count}"] = ms[count]
        keys[f"latency_ms_{REFERENCE}@{count}"] = reference[count]
        keys[f"latency_ratio_vs_{REFERENCE}@{count}"] = round(ms[count] / reference[count], 4)
    return keys


def _ms(per_thread: dict[int, float]) -> str:
    return " / ".join(f"{per_thread[t]:.2f}" for t in sorted(per_thread)) + " ms"


def speed_score(latency_ms: dict[int, float]) -> float:
    """What candidates are ranked by: the geometric mean of their medians at 1 thread and at the profile's
    threads. Not the profile's threads alone: on a small conversion host (2 cores here) the all-core timing
    carries the timing process's own load, and the device's core count differs anyway; PP-TinyPose once went
    to onnxruntime FP32 on 6.71 vs 7.04 ms at 2 threads although OpenVINO bf16 took 5.13 vs 6.55 at 1, and
    onnxruntime then took 11.9 ms at 2 threads in bench/x86_backends.py."""
    return math.prod(latency_ms.values()) ** (1 / len(latency_ms))


def _rank(passing: list[Candidate], threads: list[int]) -> list[Candidate]:
    return sorted(passing, key=lambda c: (speed_score(c.latency_ms), c.latency_ms[max(threads)]))


def _judge(passing: list[Candidate], threads: list[int]) -> Candidate:
    """Mark each passing candidate chosen / fallback / not shipped, with why; return the chosen one."""
    ranked = _rank(passing, threads)
    chosen, at = ranked[0], f"1 and {max(threads)} thread{'s' * (max(threads) > 1)}"
    chosen.status = "chosen"
    runner_up = f"; next: {ranked[1].choice.label()} {_ms(ranked[1].latency_ms)}" if len(ranked) > 1 else ""
    chosen.why = (f"fastest over {at} (geometric mean) of {len(ranked)} that met the budget "
                  f"({_ms(chosen.latency_ms)}{runner_up})")
    for c in ranked[1:]:
        slower = (f"{speed_score(c.latency_ms) / speed_score(chosen.latency_ms):.2f}x the chosen one's time over "
                  f"{at}")
        if c.choice.fallback:
            missing = RUNTIME_OF_FORMAT[chosen.choice.format]
            when = (f"a device without {missing} runs it" if missing != RUNTIME_OF_FORMAT[c.choice.format] else
                    "a device runs it when the chosen one does not load")
            c.status, c.why = "fallback", f"kept as the profile's fallback ({when}); {slower}"
        else:
            c.status, c.why = "not shipped", f"{slower}; not a fallback in the profile"
    return chosen


def metric_of(art: BuiltArtifact | None) -> dict[str, Any]:
    """The family verdict an artifact carries (its first check with a metric); {} for the FP32 reference."""
    for check in (art.checks if art else []):
        if check.get("metric") is not None and check.get("value") is not None:
            return {k: check.get(k) for k in ("metric", "value", "budget", "passed")}
    return {}


def table_row(c: Candidate, reference: dict[int, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"artifact": c.choice.label(), "format": c.choice.format, "precision": c.choice.precision,
                           "fallback": c.choice.fallback, "status": c.status, **metric_of(c.artifact)}
    if c.key == REFERENCE and c.artifact is not None:
        row["metric"] = "the FP32 reference"
    if c.latency_ms:
        row["latency_ms"] = {str(t): ms for t, ms in sorted(c.latency_ms.items())}
        row["ratio_vs_onnxruntime_fp32"] = {str(t): round(ms / reference[t], 4)
                                            for t, ms in sorted(c.latency_ms.items())}
    row["why"] = c.why or c.result.reason
    return row


Results = list[tuple[ArtifactChoice, BuildResult]]


def choose_by_speed(profile: Profile, role: str, source: ExportSource, results: Results, fp32: Path,
                    options: dict[str, Any], progress: Callable[[str], None]) -> tuple[BuiltModel, list]:
    """The fastest passing candidate first, then the passing fallbacks in the profile's order; and the table."""
    candidates = [Candidate(choice, result) for choice, result in results]
    passing = [c for c in candidates if c.artifact is not None]
    if not passing:
        raise ConversionError(f"{role}: no artifact passed its check "
                              f"({'; '.join(f'{c.choice.label()}: {c.result.reason}' for c in candidates)})")
    threads = thread_counts(int(options.get("threads") or 0))
    feeds = options["family"].latency_feeds(role, options["fp32_models"], options["val_images"], LATENCY_FEEDS)
    progress(f"{role}: timing {len(passing)} candidate(s) side by side at {'/'.join(map(str, threads))} thread(s)")
    measured = time_side_by_side(passing, fp32, feeds, threads, profile.runtime.openvino)
    for c in passing:
        c.latency_ms = measured[c.key]
    chosen = _judge(passing, threads)
    shipped = [chosen] + [c for c in passing if c.status == "fallback"]
    for c in shipped:
        c.artifact.metrics.update(latency_keys(c.latency_ms, measured[REFERENCE]))
        if c.key != REFERENCE:      # the older keys, for readers of them; onnxruntime INT8 keeps its pass's own
            c.artifact.metrics.setdefault("latency_ratio", round(c.latency_ms[max(threads)] /
                                                                 measured[REFERENCE][max(threads)], 4))
            c.artifact.metrics.setdefault("latency_ratio_1thread", round(c.latency_ms[1] / measured[REFERENCE][1], 4))
    for c in candidates:
        if c.artifact is None:
            c.why = c.result.reason
    table = [table_row(c, measured[REFERENCE]) for c in candidates]
    decision = (f"runs {chosen.choice.label()}: {chosen.why}; shipped: "
                f"{', '.join(c.choice.label() for c in shipped)}. "
                + "; ".join(f"{c.choice.label()}: {c.result.reason}" for c in candidates))
    progress(f"{role}: {decision}")
    return BuiltModel(source, [c.artifact for c in shipped], 0, decision), table


def ship_in_order(role: str, source: ExportSource, results: Results,
                  progress: Callable[[str], None]) -> tuple[BuiltModel, list]:
    """A target this host cannot time: every artifact that passed ships, in the profile's order."""
    artifacts = [r.artifact for _, r in results if r.artifact is not None]
    reasons = [f"{choice.label()}: {r.reason}" for choice, r in results]
    if not artifacts:
        raise ConversionError(f"{role}: no artifact passed its check ({'; '.join(reasons)})")
    chosen = artifacts[0]
    head = (f"first choice on the device: {chosen.format} {chosen.precision} (speed cannot be measured "
            "here: every artifact that passed its check ships, in the profile's order)")
    table = [{"artifact": choice.label(), "format": choice.format, "precision": choice.precision,
              "fallback": choice.fallback, "status": ("chosen" if r.artifact is chosen else
                                                      "shipped" if r.artifact is not None else "refused"),
              **metric_of(r.artifact), "why": r.reason} for choice, r in results]
    decision = f"{head}. " + "; ".join(reasons)
    progress(f"{role}: {decision}")
    return BuiltModel(source, artifacts, 0, decision), table
