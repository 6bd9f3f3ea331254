"""What the OpenVINO builders share: where they may build, and latency measured so that candidates compare.

Every OpenVINO candidate is timed in the same alternating rounds (converters/latency.py) as the FP32 ONNX
reference in onnxruntime, at 1 thread and at the profile's threads (capped at this host's cores). The ratio
to that common reference is what lets the converter compare candidates of different formats and builds
(onnxruntime INT8, OpenVINO f32 / bf16 / INT8): each was timed against the same yardstick.

Metric keys written into artifact.metrics (T = a thread count, e.g. 1 and 2 here):
    latency_ms@T                             the shipped artifact, as the device runs it
    latency_ms_onnxruntime_fp32@T            the FP32 ONNX reference in onnxruntime, same rounds
    latency_ratio_vs_onnxruntime_fp32@T      the first over the second (< 1: faster than onnxruntime FP32)
    latency_ms_<alternative>@T               every alternative timed in the same rounds (front ends, INT8 routes)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..latency import compare
from ..runners.openvino import OpenVinoRunner
from .base import PassContext, host_arch
from .quantize import thread_counts

REFERENCE = "onnxruntime_fp32"
LATENCY_FEEDS, LATENCY_ROUNDS = 4, 7
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def threads_of(ctx: PassContext) -> list[int]:
    return thread_counts(int(ctx.options.get("threads") or 0))


def refusal_for_target(ctx: PassContext) -> str | None:
    """OpenVINO artifacts are built for, judged and timed on this host's CPU: an x86_64 CPU profile."""
    target = ctx.target
    if target.accelerator != "cpu" or target.arch != host_arch():
        return (f"refused: OpenVINO artifacts are built for CPU profiles of this host's architecture ({host_arch()}), "
                f"where they are judged and timed; this target is {target.arch} {target.accelerator}")
    if ctx.options.get("family") is None or not ctx.options.get("val_images"):
        return "refused: judging an OpenVINO artifact needs the task family and validation pictures"
    return None


def host_bf16_flags(cpuinfo: Path | None = None) -> list[str]:
    """The CPU flags that give this host bfloat16 arithmetic (AMX-BF16, AVX512-BF16), as the kernel lists them."""
    try:
        words = set((cpuinfo or CPUINFO).read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return []
    return [flag for flag in BF16_FLAGS if flag in words]


def time_candidates(candidates: dict[str, tuple[Path, str]], reference: Path, feeds: list[dict],
                    threads: list[int], properties: dict[str, Any] | None = None,
                    rounds: int = LATENCY_ROUNDS) -> dict[str, dict[int, float]]:
    """Median ms per candidate (name -> (IR, precision)) and per thread count, alternating with the FP32
    ONNX reference in onnxruntime (under REFERENCE); `properties`: the profile's OpenVINO properties."""
    measured: dict[str, dict[int, float]] = {}
    for count in threads:
        runners = {name: OpenVinoRunner(path, count, precision, properties)
                   for name, (path, precision) in candidates.items()}
        lat = compare({REFERENCE: reference, **runners}, feeds, count, rounds)
        for name, ms in lat.median_ms.items():
            measured.setdefault(name, {})[count] = round(ms, 3)
    return measured


def latency_metrics(measured: dict[str, dict[int, float]], chosen: str,
                    alternatives: dict[str, str]) -> dict[str, float]:
    """The flat metric keys above; `alternatives`: candidate name -> its key (latency_ms_<key>@T)."""
    metrics: dict[str, float] = {}
    for count, ms in measured[chosen].items():
        reference = measured[REFERENCE][count]
        metrics[f"latency_ms@{count}"] = ms
        metrics[f"latency_ms_{REFERENCE}@{count}"] = reference
        metrics[f"latency_ratio_vs_{REFERENCE}@{count}"] = round(ms / reference, 4)
    for name, key in alternatives.items():
        for count, ms in measured.get(name, {}).items():
            metrics[f"latency_ms_{key}@{count}"] = ms
    return metrics


def describe_ms(per_thread: dict[int, float]) -> str:
    return ", ".join(f"{ms:.2f} ms at {t} thread{'s' * (t > 1)}" for t, ms in sorted(per_thread.items()))
