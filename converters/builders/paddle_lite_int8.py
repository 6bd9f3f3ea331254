"""Paddle Lite full-INT8 `.nb` for ARM: Paddle's PTQ of the legacy program, judged, then opt.

The export's legacy program (a PIR one is written as legacy first, proven equal) is quantized and
judged by converters/passes/paddle_ptq.py: the quantized program runs in Paddle Inference, which
simulates the int8 rounding in float, and must meet the family budget against the FP32 reference on
the held-out pictures. The passing program goes through opt for the profile's valid_targets.

What is and is not proven: the `.nb` itself is never executed here (no ARM CPU; Paddle Lite's x86
runtime segfaults on INT8 `.nb` files, so not even an x86 twin can run). Besides the simulation, the
record carries opt's operator report and a census of opt's optimised program from the same options
(written as protobuf): which operators opt set to run in int8 and which stay float.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from runtimes.errors import ConversionError

from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext
from ..passes.paddle_lite_opt import PaddleLiteOptPass, opt_reason
from ..passes.paddle_ptq import WORKER, PaddlePtqPass
from ..passes.pir_to_legacy import PirToLegacyPass
from ..worker_call import call_paddle_worker
from .base import BuildResult, check_record, target_name

NOT_EXECUTED = ("the INT8 .nb itself: this host has no ARM CPU, and Paddle Lite's x86 runtime segfaults on INT8 "
                ".nb files (measured: SIGSEGV running the x86 INT8 .nb opt made from PicoDet-S-320's quantized "
                "program), so neither the file nor an x86 twin ran; the ARM int8 kernels' own rounding and "
                "accumulation were not executed")
CENSUS_TIMEOUT_S = 300


def _legacy(ctx: PassContext) -> tuple[ModelFile | None, str]:
    source = ctx.options.get("source")
    if source is None or source.format == "onnx":
        return None, ("refused: the source is an ONNX model; Paddle's post-training quantization and Paddle Lite's "
                      "opt need the Paddle program (a legacy .pdmodel or PIR .json export with its .pdiparams)")
    try:
        return PirToLegacyPass().run(ModelFile(source.model_file, source.format), ctx), ""
    except ConversionError as err:
        return None, f"refused: no legacy program to quantize: {err}"


def opt_census(program: ModelFile, targets: tuple[str, ...]) -> dict[str, Any]:
    """opt on `program` for `targets` written as a protobuf program, and its operators counted."""
    from ..toolchains.paddle_lite import opt_command, paddle_lite_env

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized"
        argv = opt_command() + ["--model_file", str(program.path), "--param_file",
                                str(program.path.with_suffix(".pdiparams")), "--valid_targets", ",".join(targets),
                                "--optimize_out_type", "protobuf", "--optimize_out", str(out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=CENSUS_TIMEOUT_S, env=paddle_lite_env())
        except subprocess.TimeoutExpired:
            raise ConversionError(f"opt (protobuf census) did not finish within {CENSUS_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not (out / "model").is_file():
            raise ConversionError(f"opt (protobuf census): {opt_reason(proc)}")
        counts = call_paddle_worker("census", "opt census", module=WORKER, model=str(out / "model"))
    return {"int8": counts["int8"], "float_or_other": counts["float_or_other"]}


def _record(ptq: dict[str, Any], nb: ModelFile, census: dict[str, Any], ctx: PassContext) -> dict[str, Any]:
    layers = ptq["fp32_layers"]
    executed = (f"the quantized legacy program this .nb was made from ({ptq['calibration_method']} ranges, "
                f"{len(layers)} layers kept in float) in {ptq['runner']}: simulated quantization, float arithmetic")
    opt = nb.notes["paddle_lite_opt"]
    record = check_record(executed, None, ctx, not_executed=NOT_EXECUTED,
                          calibration_method=ptq["calibration_method"], layers_in_float=layers,
                          calibration_inputs=ptq["calibration"]["inputs"], samples=ptq["samples"],
                          output_sqnr_db=ptq["output_sqnr_db"], candidates=ptq["candidates"],
                          op_report={"valid_targets": opt["valid_targets"], **opt["op_report"],
                                     "bytes": opt["bytes"]},
                          opt_program_ops=census)
    record.update(metric=ptq["metric"], value=ptq["value"], budget=ptq["budget"], passed=True)
    return record


def build_paddle_lite_int8(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    if ctx.target.arch != "aarch64":      # the scheme and its records are about ARM files
        return BuildResult(None, "refused: Paddle Lite INT8 .nb files are built for ARM profiles, "
                                 f"not {ctx.target.arch}")
    program, refusal = _legacy(ctx)
    if program is None:
        return BuildResult(None, refusal)
    quantized = PaddlePtqPass().run(program, ctx)
    ptq = quantized.notes["paddle_ptq"]
    if not ptq["accepted"]:
        return BuildResult(None, f"refused: in Paddle Inference's simulation, {ptq['reason']}")
    try:
        nb = PaddleLiteOptPass().run(quantized, ctx)
        census = opt_census(quantized, tuple(nb.notes["paddle_lite_opt"]["valid_targets"]))
    except ConversionError as err:
        return BuildResult(None, f"refused: {err}")
    metrics = {f"simulated {ptq['metric']}": ptq["value"]}
    if ptq["output_sqnr_db"] is not None:
        metrics["simulated output_sqnr_db"] = ptq["output_sqnr_db"]
    reason = (f"simulated in Paddle Inference: {ptq['reason']}; opt set {sum(census['int8'].values())} operators to "
              f"int8; the INT8 .nb itself was not executed here (no ARM CPU)")
    return BuildResult(BuiltArtifact(nb.path, "paddle_lite", "int8", ctx.target.quantization, target_name(ctx),
                                     metrics, list(ptq["fp32_layers"]), checks=[_record(ptq, nb, census, ctx)]),
                       reason)
