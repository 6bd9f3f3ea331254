"""OpenVINO IR f32 and bf16: the same IR, executed with INFERENCE_PRECISION_HINT f32 or bf16.

Both front ends (the Paddle export, our optimised FP32 ONNX: converters/passes/openvino_ir.py) are judged
with the family metric against the FP32 ONNX reference, executed in the artifact's precision, and timed at 1
thread and the profile's threads in the same alternating rounds as onnxruntime FP32; the faster one at the
profile's threads that meets the budget ships. bf16 is built only where this CPU computes bfloat16
(AMX-BF16 or AVX512-BF16): anywhere else OpenVINO could neither be judged nor timed in it here.
"""
from __future__ import annotations

import shutil
from typing import Any

from ..families.base import Evaluation
from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext, host_arch
from ..passes.openvino_ir import FrontEnd, build_front_ends, ir_files
from ..passes.openvino_latency import (BF16_FLAGS, LATENCY_FEEDS, describe_ms, host_bf16_flags, latency_metrics,
                                       refusal_for_target, threads_of, time_candidates)
from ..runners.openvino import PRECISION_HINTS, OpenVinoRunner, openvino_version
from .base import BuildResult, check_record, target_name

FRONT_END_KEYS = {"paddle": "paddle_frontend", "onnx": "onnx_frontend"}


def executed_text(precision: str, runner: OpenVinoRunner, origin: str) -> str:
    return (f"this IR in OpenVINO {openvino_version()} CPU on {host_arch()}, {runner.precision} execution "
            f"(INFERENCE_PRECISION_HINT {PRECISION_HINTS[precision]}, as the device runs a {precision} artifact; "
            f"{runner.threads} thread(s)); {origin}")


def _judge(end: FrontEnd, precision: str, ctx: PassContext, threads: int) -> tuple[Evaluation | None, str, str]:
    """(verdict, what executed, refusal) of one front end's IR in `precision`."""
    runner = OpenVinoRunner(end.xml, threads, precision, ctx.target.runtime.openvino)
    if runner.precision != PRECISION_HINTS[precision]:
        return None, "", (f"OpenVINO compiled the {end.name} IR for {runner.precision} execution, not "
                          f"{PRECISION_HINTS[precision]}")
    family, fp32_models = ctx.options["family"], ctx.options["fp32_models"]
    verdict = family.evaluate(ctx.role, fp32_models, runner, ctx.options["val_images"])
    ctx.progress(f"{ctx.role}: OpenVINO {precision} IR from the {end.name} front end: {verdict.describe()}")
    return verdict, executed_text(precision, runner, f"IR read by OpenVINO's {end.name} front end from "
                                                                f"{end.read_from.name}"), ""


def _bf16_refusal(ctx: PassContext) -> tuple[str | None, str | None]:
    """(refusal, what was not executed) for a bf16 artifact."""
    flags = host_bf16_flags()
    if not flags:
        return (f"refused: bf16 execution needs a CPU with {' or '.join(BF16_FLAGS)}; this host has neither "
                "(/proc/cpuinfo), so the artifact could not be judged or timed in bf16 here"), None
    promised = [f for f in BF16_FLAGS if f in ctx.target.cpu_features]
    not_executed = None if promised else (
        f"profile {ctx.target.profile} does not list {' or '.join(BF16_FLAGS)} in its cpu_features: bf16 execution "
        f"was checked on this host ({', '.join(flags)}), not on a device CPU without them")
    return None, not_executed


def front_ends_and_feeds(fp32: ModelFile, ctx: PassContext) -> tuple[list[int], list[dict], list[FrontEnd]]:
    """The thread counts and the pictures' feeds every OpenVINO candidate is timed with, and the f32 IR read
    through each front end (the Paddle export, our ONNX)."""
    family, fp32_models, val = ctx.options["family"], ctx.options["fp32_models"], ctx.options["val_images"]
    feeds = family.latency_feeds(ctx.role, fp32_models, val, LATENCY_FEEDS)
    return threads_of(ctx), feeds, build_front_ends(fp32, ctx, feeds[0])


def _build(fp32: ModelFile, ctx: PassContext, precision: str) -> BuildResult:
    refusal = refusal_for_target(ctx)
    not_executed = None
    if refusal is None and precision == "bf16":
        refusal, not_executed = _bf16_refusal(ctx)
    if refusal:
        return BuildResult(None, refusal)
    threads, feeds, ends = front_ends_and_feeds(fp32, ctx)
    judged: dict[str, tuple[FrontEnd, Evaluation, str]] = {}
    failed: dict[str, str] = {end.name: end.reason for end in ends if end.xml is None}
    for end in ends:
        if end.xml is not None:
            verdict, executed, why = _judge(end, precision, ctx, max(threads))
            if verdict is None:
                failed[end.name] = why
            else:
                judged[end.name] = (end, verdict, executed)
    passing = {name: j for name, j in judged.items() if j[1].passed}
    failed.update({name: f"misses: {j[1].describe()}" for name, j in judged.items() if name not in passing})
    if not passing:
        return BuildResult(None, "refused: no OpenVINO front end met the budget in "
                                 f"{precision} ({'; '.join(f'{n}: {r}' for n, r in failed.items())})")
    measured = time_candidates({name: (j[0].xml, precision) for name, j in passing.items()}, fp32.path, feeds, threads,
                               ctx.target.runtime.openvino)
    chosen = min(passing, key=lambda name: (measured[name][max(threads)], measured[name][min(threads)]))
    end, verdict, executed = passing[chosen]
    xml = ctx.workdir / f"{ctx.role}.{precision}.xml"
    for src, dst in zip(ir_files(end.xml), ir_files(xml)):
        shutil.copyfile(src, dst)
    front_ends: dict[str, Any] = {
        name: {"read_from": j[0].read_from.name, "verdict": j[1].describe(), **j[0].details,
               **({"latency_ms": {str(t): ms for t, ms in measured[name].items()}} if name in measured else {})}
        for name, j in judged.items()}
    front_ends.update({name: {"refused": why} for name, why in failed.items() if name not in judged})
    metrics = {verdict.metric: round(verdict.value, 6), **{k: round(v, 6) for k, v in verdict.extras.items()},
               **latency_metrics(measured, chosen, {n: FRONT_END_KEYS[n] for n in measured if n in FRONT_END_KEYS})}
    check = check_record(executed, verdict, ctx, not_executed, front_end=chosen, front_ends=front_ends,
                         inference_precision_hint=PRECISION_HINTS[precision], openvino=openvino_version(),
                         latency_ms={str(t): ms for t, ms in measured[chosen].items()},
                         latency_ms_onnxruntime_fp32={str(t): ms for t, ms in measured["onnxruntime_fp32"].items()})
    others = "; ".join(f"{n} front end: {describe_ms(measured[n]) if n in measured else failed[n]}"
                       for n in FRONT_END_KEYS if n != chosen and (n in measured or n in failed))
    reason = (f"{verdict.describe()}; {precision} from the {chosen} front end: {describe_ms(measured[chosen])} "
              f"(onnxruntime FP32: {describe_ms(measured['onnxruntime_fp32'])})" + (f"; {others}" if others else ""))
    artifact = BuiltArtifact(xml, "openvino", precision, None, target_name(ctx), metrics, checks=[check],
                             companions=[xml.with_suffix(".bin")])
    return BuildResult(artifact, reason)


def build_openvino_fp32(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    return _build(fp32, ctx, "fp32")


def build_openvino_bf16(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    return _build(fp32, ctx, "bf16")
