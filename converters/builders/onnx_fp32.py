"""ONNX FP32: the optimised reference itself, proven equal to Paddle Inference."""
from __future__ import annotations

from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from .base import BuildResult, check_record, onnxruntime_here, runs_here, target_name
from .emulation import emulated_check


def build_onnx_fp32(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    parity = fp32.notes.get("paddle_parity", {})
    metrics = {"paddle_max_abs_diff": parity["max_abs_diff"]} if parity else {}
    reason = ("the FP32 reference" + (f", equal to Paddle Inference (max |diff| {parity['max_abs_diff']:.1e})"
                                      if parity else ""))
    checks = [check_record(f"this file in {onnxruntime_here()}, against Paddle Inference", None, ctx,
                           **({"paddle_max_abs_diff": parity["max_abs_diff"], "pictures": parity["images"]}
                              if parity else {}))]
    if not runs_here(ctx):
        verdict, record = emulated_check(fp32.path, ctx)
        checks.append(record)
        if verdict is not None and not verdict.passed:
            return BuildResult(None, f"refused: under emulation {verdict.describe()}")
        reason += f"; {record['executed'].split(',')[0]}: {verdict.describe() if verdict else 'not checked'}"
    artifact = BuiltArtifact(fp32.path, "onnx", "fp32", None, target_name(ctx), metrics, checks=checks)
    return BuildResult(artifact, reason)
