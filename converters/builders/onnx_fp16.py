"""ONNX FP16 for TensorRT/CUDA (Jetson): built by converters/passes/fp16.py, checked here on the CPU.

Nothing on this host runs TensorRT or CUDA. What does run an FP16 ONNX file here is onnxruntime's CPU
provider, and what it does with one is read from its own profile, per model. Measured with onnxruntime
1.32 on x86_64 for the five families: only data movement (Reshape, Transpose, Concat, Split, Cast) ran
on float16; every arithmetic operator (Conv, Add, Mul, Clip, pooling, activations) ran on float32
behind Casts it inserts, and the Casts between two such operators cancel out (its
insert_cast_transformer.cc), so that run has FP16 weights but mostly FP32 activations.
Two checks are therefore recorded, both held to the family metric against FP32:

1. the FP16 storage twin (the pass's judge): this file with explicit Casts around every FP16 operator,
   so every tensor between them is FP16 and each operator computes in FP32 inside; its profile says
   how many of those Casts onnxruntime executed (all of them, for the five families);
2. this file itself in onnxruntime's CPU provider, with the kernels its profile shows on float16 and
   on float32.

Neither executes FP16 arithmetic inside an operator, and the records say so.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..latency import session
from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from ..passes.fp16 import Fp16Pass
from ..runners.onnx_unoptimized import OnnxUnoptimizedRunner
from .base import BuildResult, check_record, onnxruntime_here, target_name
from .onnx_fp32 import CUDA_NOT_EXECUTED as NOT_EXECUTED
NO_FP16_ARITHMETIC = ("; FP16 arithmetic inside operators (as an FP16 GPU kernel multiplies and sums) was not "
                      "executed either: onnxruntime's CPU provider computed each operator in float32")


def kernel_precisions(path: Path, feed: dict, optimize: bool, workdir: Path) -> dict[str, Counter]:
    """Which kernels onnxruntime's CPU provider ran on float16 and on float32 inputs, from its profile of one run."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / f"{path.stem}.profile")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    profile = Path(sess.end_profiling())
    events = json.loads(profile.read_text(encoding="utf-8"))
    profile.unlink()
    kernels = {"float16": Counter(), "float32": Counter()}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        types = {t for item in args.get("input_type_shape", []) for t in item}
        kind = "float16" if "float16" in types else "float32" if "float" in types else None
        if kind:
            kernels[kind][args.get("op_name", "?")] += 1
    return kernels


def output_drift(fp32: Path, runner, feed: dict) -> dict[str, float]:
    """How far `runner`'s outputs are from the FP32 reference's on one input: relative RMS and max |diff|
    (FP16 rounds to 11 significant bits: a relative error near 1e-3 is what FP16 storage costs)."""
    reference = session(fp32, 1).run(None, feed)
    got = runner.run(None, feed)
    noise = sum(float(np.sum((r.astype(np.float64) - g) ** 2)) for r, g in zip(reference, got))
    power = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    worst = max((float(np.max(np.abs(r.astype(np.float64) - g))) for r, g in zip(reference, got) if r.size),
                default=0.0)
    return {"rel_rms": (noise / max(power, 1e-30)) ** 0.5, "max_abs": worst}


def _ops(counts: Counter) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.most_common()) or "none"


def _file_check(path: Path, ctx: PassContext, feed: dict) -> tuple[Any, dict[str, Any]]:
    family, fp32, val = ctx.options["family"], ctx.options["fp32_models"], ctx.options["val_images"]
    verdict = family.evaluate(ctx.role, fp32, path, val)
    kernels = kernel_precisions(path, feed, True, ctx.workdir)
    drift = output_drift(fp32[ctx.role], session(path, 1), feed)
    arithmetic = Counter({op: n for op, n in kernels["float32"].items() if op != "Cast"})
    executed = (f"this file in {onnxruntime_here()}: its FP16 weights as stored; per onnxruntime's profile, "
                f"{sum(kernels['float16'].values())} kernels read float16 tensors ({_ops(kernels['float16'])}) and "
                f"{sum(arithmetic.values())} computed on float32 with float32 tensors between them "
                f"({_ops(arithmetic)}): "
                "onnxruntime casts the inputs of operators its CPU provider has no float16 kernel for, runs a "
                "float16-capable operator between two such ones in float32 too, and drops the Casts between them")
    record = check_record(executed, verdict, ctx, not_executed=NOT_EXECUTED + NO_FP16_ARITHMETIC,
                          kernels_on_float16=dict(kernels["float16"]), kernels_on_float32=dict(kernels["float32"]),
                          outputs_vs_fp32=drift)
    return verdict, record


def _twin_check(notes: dict[str, Any], ctx: PassContext, feed: dict) -> dict[str, Any]:
    twin = Path(notes["storage_twin"])
    kernels = kernel_precisions(twin, feed, False, ctx.workdir)
    casts_run = kernels["float16"]["Cast"] + kernels["float32"]["Cast"]
    with OnnxUnoptimizedRunner(twin, 1) as runner:
        drift = output_drift(ctx.options["fp32_models"][ctx.role], runner, feed)
    executed = (f"this file with explicit Casts around every FP16 operator (FP16 storage twin: every tensor "
                f"between FP16 operators float16, each operator computing in float32), in {onnxruntime_here()}, graph "
                f"optimisations off; per its profile {casts_run} of its {notes['storage_twin_casts']} Casts ran")
    record = check_record(executed, None, ctx, not_executed=NOT_EXECUTED + NO_FP16_ARITHMETIC,
                          fp32_nodes=notes["fp32_nodes"], kept_by=notes["kept_by"],
                          activation_limit=notes["activation_limit"], largest_activation=notes["largest_activation"],
                          candidates=notes["candidates"], calibration=notes["calibration"],
                          casts_in_twin=notes["storage_twin_casts"], casts_executed=casts_run, outputs_vs_fp32=drift)
    record.update(metric=notes["metric"], value=notes["value"], budget=notes["budget"], passed=notes["within_budget"])
    record["details"]["samples"] = notes["samples"]
    return record


def build_onnx_fp16(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    if ctx.target.accelerator != "cuda":
        return BuildResult(None, "refused: FP16 ONNX is built for CUDA targets (TensorRT, CUDA); onnxruntime's CPU "
                                 "provider computes most FP16 operators in FP32 behind Casts, slower than FP32")
    result = Fp16Pass().run(fp32, ctx)
    notes = result.notes["fp16"]
    if not notes["accepted"]:
        return BuildResult(None, f"refused: {notes['reason']}")
    family, fp32_models, val = ctx.options["family"], ctx.options["fp32_models"], ctx.options["val_images"]
    feed = family.latency_feeds(ctx.role, fp32_models, val, 1)[0]
    twin = _twin_check(notes, ctx, feed)
    verdict, record = _file_check(result.path, ctx, feed)
    ctx.progress(f"{ctx.role}: the FP16 file in onnxruntime CPU: {verdict.describe()}")
    if not verdict.passed:
        return BuildResult(None, f"refused: the FP16 file in onnxruntime's CPU provider: {verdict.describe()}")
    metrics = {f"fp16_storage_twin {notes['metric']}": notes["value"],
               f"onnxruntime_cpu {verdict.metric}": verdict.value}
    reason = (f"FP16 storage twin in onnxruntime CPU: {notes['reason']}; this file in onnxruntime CPU (float32 "
              f"arithmetic): {verdict.describe()}; {NOT_EXECUTED}")
    artifact = BuiltArtifact(result.path, "onnx", "fp16", None, target_name(ctx), metrics,
                             list(notes["fp32_nodes"]), checks=[twin, record])
    return BuildResult(artifact, reason)
