"""ONNX INT8 (QDQ): calibrated, judged against FP32 by the family metric, and faster where that can be timed."""
from __future__ import annotations

from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from ..passes.quantize import QuantizePass
from .base import BuildResult, check_record, onnxruntime_here, runs_here, target_name
from .emulation import emulated_check


def build_onnx_int8(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    result = QuantizePass().run(fp32, ctx)
    report = result.notes["quantize"]
    if not report["accepted"]:
        return BuildResult(None, f"refused: {report['reason']}")
    metrics = {report["metric"]: report["value"], **report.get("extras", {})}
    if "latency_ratio" in report:
        metrics["latency_ratio"] = report["latency_ratio"]
    metrics.update({f"latency_ms_{k}": v for k, v in report.get("latency_ms", {}).items()})
    host = runs_here(ctx)
    judged = "this file" if host else "this file (same graph and integer scheme as the device's)"
    checks = [{**check_record(f"{judged} in {onnxruntime_here()}", None, ctx,
                              calibration_method=report["calibration_method"], samples=report["samples"],
                              **report.get("extras", {})),
               "metric": report["metric"], "value": report["value"], "budget": report["budget"],
               "passed": report["within_budget"]}]
    reason = report["reason"]
    if not host:
        verdict, record = emulated_check(result.path, ctx)
        checks.append(record)
        if verdict is not None and not verdict.passed:
            return BuildResult(None, f"refused: under emulation {verdict.describe()}")
        reason += f"; under emulation: {verdict.describe() if verdict else 'not checked'}"
    return BuildResult(BuiltArtifact(result.path, "onnx", "int8", ctx.target.quantization, target_name(ctx),
                                     metrics, list(report.get("fp32_nodes", [])),
                                     list(report.get("channel_groups", [])), checks=checks), reason)
