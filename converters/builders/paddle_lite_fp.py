"""Paddle Lite `.nb` in FP32 and FP16 for ARM profiles, proven through an x86 twin.

From the export's Paddle program (a PIR program is first written as a legacy one, proven equal),
`opt` makes the `.nb` for the profile's valid_targets. This host has no ARM CPU, and Paddle Lite's
x86 runtime cannot run ARM `.nb` files (it loads them and returns zeros or crashes), so the ARM file
is not executed here. Its *twin* is: the same legacy program through opt with the same options but
`--valid_targets x86`, run in the toolchain's x86 runtime on the validation pictures and held to
the family metric against the FP32 ONNX reference. A twin that misses refuses the artifact.

FP16: Paddle Lite's x86 build has no FP16 kernels. The builder reads from the `.nb` files which
kernels opt chose (the ARM file's FP16 kernels, none in the x86 twin) and says the twin computed in
FP32; FP16 rounding is then checked on its own (converters/passes/fp16_rounding.py), named as what
it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from runtimes.errors import ConversionError

from ..families.base import Evaluation
from ..latency import session
from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from ..passes.fp16_rounding import Fp16RoundingPass
from ..passes.paddle_lite_opt import PaddleLiteOptPass
from ..passes.pir_to_legacy import PirToLegacyPass
from ..runners.base import Runner
from ..runners.onnx_unoptimized import OnnxUnoptimizedRunner
from ..runners.paddle_lite_twin import PaddleLiteTwinRunner
from .base import BuildResult, check_record, target_name

RAW_INPUTS = 2                           # inputs whose raw outputs are also compared with FP32's
ARM_NOT_EXECUTED = ("the ARM .nb itself: this host has no ARM CPU, and Paddle Lite's x86 runtime cannot run "
                    "ARM .nb files (it loads them and returns zeros or crashes); no aarch64 Paddle Lite "
                    "runtime is available here")


def _judge(ctx: PassContext, runner: Runner, compare_outputs: bool = False) -> tuple[Evaluation, dict[str, Any]]:
    """The family's verdict on `runner`; with compare_outputs, also its raw outputs against the FP32 ONNX
    reference on the first inputs the device would see (a metric at 1.0 says nothing about how close)."""
    family, fp32_models, images = ctx.options["family"], ctx.options["fp32_models"], ctx.options["val_images"]
    with runner:
        verdict = family.evaluate(ctx.role, fp32_models, runner, images)
        if not compare_outputs:
            return verdict, {}
        feeds = family.latency_feeds(ctx.role, fp32_models, images, RAW_INPUTS)
        reference = session(fp32_models[ctx.role], ctx.options.get("threads", 1))
        worst_abs, worst_rel = 0.0, 0.0
        for feed in feeds:
            for ref, got in zip(reference.run(None, feed), runner.run(None, feed)):
                diff = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12))
    return verdict, {"outputs_vs_fp32_onnx": {"inputs": len(feeds), "max_abs_diff": worst_abs,
                                              "max_rel_diff": worst_rel}}


def _report_summary(nb: ModelFile) -> dict[str, Any]:
    notes = nb.notes["paddle_lite_opt"]
    return {"valid_targets": notes["valid_targets"], "fp16": notes["fp16"], **notes["op_report"],
            "kernels": notes["kernels"], "opt_seconds": notes["seconds"], "bytes": notes["bytes"]}


def _legacy_program(ctx: PassContext) -> tuple[ModelFile | None, str]:
    source = ctx.options["source"]
    if source.format == "onnx":
        return None, ("refused: the source is an ONNX model; Paddle Lite's opt needs the Paddle program "
                      "(a legacy .pdmodel or PIR .json export with its .pdiparams)")
    try:
        return PirToLegacyPass().run(ModelFile(source.model_file, source.format), ctx), ""
    except ConversionError as err:
        return None, f"refused: no legacy program for opt: {err}"


def _fp16_in_twin(arm: ModelFile, twin: ModelFile) -> dict[str, Any]:
    """Which kernels compute in FP16, read from the files opt wrote (the ARM one is not run here)."""
    arm_fp16 = arm.notes["paddle_lite_opt"]["kernels"]["fp16_ops"]
    twin_kernels = twin.notes["paddle_lite_opt"]["kernels"]
    if twin_kernels["fp16_ops"]:
        return {"twin_computes_fp16": True,
                "why": f"opt chose FP16 kernels in the x86 twin: {twin_kernels['fp16_ops']}"}
    return {"twin_computes_fp16": False,
            "why": f"opt chose no FP16 kernel for the x86 twin (its kernels: {twin_kernels['by_place']}); Paddle "
                   f"Lite's x86 build has none, so the twin computed in FP32. The ARM .nb holds FP16 kernels for "
                   f"{sum(arm_fp16.values())} operators: {arm_fp16}"}


def _fp16_rounding_check(fp32: ModelFile, ctx: PassContext) -> tuple[Evaluation, dict[str, Any]]:
    rounded = Fp16RoundingPass().run(fp32, ctx)
    runner = OnnxUnoptimizedRunner(rounded.path, ctx.options.get("threads", 1))
    executed = (f"the FP32 ONNX reference with every weight and every float tensor rounded to FP16 and "
                f"FP32 arithmetic in between, in {runner.description}")
    verdict, raw = _judge(ctx, runner, compare_outputs=True)
    record = check_record(executed, verdict, ctx,
                          not_executed="FP16 arithmetic: Paddle Lite's ARM FP16 kernels (their own multiplications "
                                       "and sums) were not executed; Paddle Lite's x86 build has no FP16 kernels "
                                       "and no aarch64 Paddle Lite runtime is available here",
                          **rounded.notes["fp16_rounding"], **raw)
    return verdict, record


def _twin_record(arm: ModelFile, twin: ModelFile, program: ModelFile, verdict: Evaluation, runner: Runner,
                 ctx: PassContext, extra: dict[str, Any]) -> dict[str, Any]:
    flags = "--valid_targets x86" + (" --enable_fp16 true" if arm.notes["paddle_lite_opt"]["fp16"] else "")
    executed = (f"the x86 twin (the same legacy program through opt with the same options, {flags}) in "
                f"{runner.description}")
    if extra.get("twin_computes_fp16") is False:       # say it where every reader looks, not only in details
        executed += ", which computed in FP32: the x86 build has no FP16 kernels"
    details: dict[str, Any] = {"op_report": {"arm": _report_summary(arm), "x86_twin": _report_summary(twin)},
                               **extra}
    if "pir_to_legacy" in program.notes:
        p2l = program.notes["pir_to_legacy"]
        details["pir_to_legacy"] = {k: p2l[k] for k in ("route", "weights_equal", "max_abs_diff", "max_rel_diff",
                                                         "inputs_compared", "tolerance_rel")}
    return check_record(executed, verdict, ctx, not_executed=ARM_NOT_EXECUTED, **details)


def _build(fp32: ModelFile, ctx: PassContext, fp16: bool) -> BuildResult:
    if ctx.target.arch != "aarch64":      # the twin scheme and its records are about ARM files
        return BuildResult(None, f"refused: Paddle Lite .nb files are built for ARM profiles, not {ctx.target.arch}")
    program, refusal = _legacy_program(ctx)
    if program is None:
        return BuildResult(None, refusal)
    try:
        arm = PaddleLiteOptPass(fp16=fp16).run(program, ctx)
        twin = PaddleLiteOptPass(("x86",), fp16=fp16).run(program, ctx)
    except ConversionError as err:
        return BuildResult(None, f"refused: {err}")
    try:
        runner = PaddleLiteTwinRunner(twin.path, ctx.options.get("threads", 1))
        verdict, extra = _judge(ctx, runner, compare_outputs=True)
    except ConversionError as err:        # an unchecked file does not ship
        return BuildResult(None, f"refused: its x86 twin could not be run: {err}")
    # Paddle Lite's x86 runtime cannot change input shape in one predictor (converters/runners/paddle_lite_twin.py)
    extra["fresh_predictors_for_new_input_shapes"] = runner.restarts
    ctx.progress(f"{ctx.role}: x86 twin of the {arm.precision} .nb: {verdict.describe()}")
    if fp16:
        extra.update(_fp16_in_twin(arm, twin))
    checks = [_twin_record(arm, twin, program, verdict, runner, ctx, extra)]
    metrics = {f"x86_twin {verdict.metric}": verdict.value}
    if not verdict.passed:
        return BuildResult(None, f"refused: its x86 twin in Paddle Lite {runner.version}: {verdict.describe()}")
    reason = f"x86 twin in Paddle Lite {runner.version}: {verdict.describe()}"
    if fp16:
        rounding, record = _fp16_rounding_check(fp32, ctx)
        checks.append(record)
        metrics[f"fp16_rounded {rounding.metric}"] = rounding.value
        ctx.progress(f"{ctx.role}: FP16-rounded reference: {rounding.describe()}")
        if not rounding.passed:
            return BuildResult(None, f"refused: with weights and tensors rounded to FP16: {rounding.describe()}")
        reason += f"; FP16-rounded reference: {rounding.describe()}; FP16 arithmetic not executed here"
    reason += "; the ARM file itself was not executed here (no ARM CPU)"
    return BuildResult(BuiltArtifact(arm.path, "paddle_lite", arm.precision, None, target_name(ctx), metrics,
                                     checks=checks), reason)


def build_paddle_lite_fp32(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    return _build(fp32, ctx, fp16=False)


def build_paddle_lite_fp16(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    return _build(fp32, ctx, fp16=True)
