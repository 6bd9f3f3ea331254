"""ONNX FP32: the optimised reference itself, proven equal to Paddle Inference."""
from __future__ import annotations

from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from .base import BuildResult, check_record, onnxruntime_here, runs_here, target_name
from .emulation import emulated_check_later

CUDA_NOT_EXECUTED = "TensorRT and CUDA (NVIDIA GPU): not executed here"


def build_onnx_fp32(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    parity = fp32.notes.get("paddle_parity", {})
    metrics = {"paddle_max_abs_diff": parity["max_abs_diff"]} if parity else {}
    reason = ("the FP32 reference" + (f", equal to Paddle Inference (max |diff| {parity['max_abs_diff']:.1e})"
                                      if parity else ""))
    # A Jetson runs it in TensorRT or CUDA, which this host has not; an aarch64 CPU's runs under emulation.
    not_executed = CUDA_NOT_EXECUTED if target_name(ctx) == "cuda" else None
    checks = [check_record(f"this file in {onnxruntime_here()}, against Paddle Inference", None, ctx, not_executed,
                           **({"paddle_max_abs_diff": parity["max_abs_diff"], "pictures": parity["images"]}
                              if parity else {}))]
    artifact = BuiltArtifact(fp32.path, "onnx", "fp32", None, target_name(ctx), metrics, checks=checks)
    pending = None if runs_here(ctx) or not_executed else emulated_check_later(fp32.path, ctx)
    return BuildResult(artifact, reason, pending)
