"""ONNX INT8 (QDQ): calibrated, judged against FP32 by the family metric, and faster where that can be timed.

Where the device is not this host, a second check follows the family's verdict: an aarch64 CPU
artifact runs under emulation (checks/emulated.py); a Jetson's runs in TensorRT, which cannot run
here, so its file is proven to be in TensorRT's explicit-quantization form instead (checks/tensorrt_form.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..checks.tensorrt_form import check_tensorrt_form
from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from ..passes.quantize import QuantizePass
from .base import BuildResult, check_record, onnxruntime_here, runs_here, target_name
from .emulation import emulated_check_later

# target -> (what executed the file here for the family's verdict, what was not executed here)
JUDGED_HERE: dict[str, tuple[Callable[[], str], str | None]] = {
    "cuda": (lambda: f"this QDQ file in {onnxruntime_here()}, graph optimisations off (executed as written, float "
                     "biases, as TensorRT keeps them)", "TensorRT (NVIDIA GPU): not executed here"),
}


def _host_or_same_graph(host: bool) -> tuple[Callable[[], str], None]:
    judged = "this file" if host else "this file (same graph and integer scheme as the device's)"
    return (lambda: f"{judged} in {onnxruntime_here()}"), None


def _tensorrt_form(path: Path, ctx: PassContext) -> tuple[str | None, dict[str, Any], str]:
    form = check_tensorrt_form(path)
    ctx.progress(f"{ctx.role}: structural check: {form.describe()}")
    if not form.passed:
        return f"refused: {form.describe()}", form.record(), ""
    return None, form.record(), "; structural check: in TensorRT's explicit-quantization form"


# target -> the second check, done now, of a file this host cannot execute as the device does; a target
# not named here is an aarch64 CPU, whose file runs under emulation on the check pool (BuildResult.pending)
DEVICE_CHECKS = {"cuda": _tensorrt_form}


def build_onnx_int8(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    result = QuantizePass().run(fp32, ctx)
    report = result.notes["quantize"]
    if not report["accepted"]:
        return BuildResult(None, f"refused: {report['reason']}")
    metrics = {report["metric"]: report["value"], **report.get("extras", {})}
    if "latency_ratio" in report:
        metrics["latency_ratio"] = report["latency_ratio"]
    metrics.update({f"latency_ms_{k}": v for k, v in report.get("latency_ms", {}).items()})
    host, target = runs_here(ctx), target_name(ctx)
    executed, not_executed = JUDGED_HERE.get(target) or _host_or_same_graph(host)
    checks = [{**check_record(executed(), None, ctx, not_executed,
                              calibration_method=report["calibration_method"], samples=report["samples"],
                              **report.get("extras", {})),
               "metric": report["metric"], "value": report["value"], "budget": report["budget"],
               "passed": report["within_budget"]}]
    reason, pending = report["reason"], None
    if not host and target in DEVICE_CHECKS:
        refusal, record, said = DEVICE_CHECKS[target](result.path, ctx)
        checks.append(record)
        if refusal:
            return BuildResult(None, refusal)
        reason += said
    elif not host:
        pending = emulated_check_later(result.path, ctx)
    return BuildResult(BuiltArtifact(result.path, "onnx", "int8", ctx.target.quantization, target,
                                     metrics, list(report.get("fp32_nodes", [])),
                                     list(report.get("channel_groups", [])), checks=checks), reason, pending)
