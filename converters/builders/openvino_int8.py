"""OpenVINO INT8: NNCF post-training quantization of the f32 IR, or OpenVINO running our own QDQ ONNX INT8.

Two routes, each judged with the family metric on the held-out pictures in OpenVINO (the float remainder in
f32, as the device runs an int8 IR), each with its own float fallback:
- "nncf": converters/passes/openvino_nncf.py on the f32 IR of the faster front end (NNCF's accuracy control
  puts the most sensitive operations back in float);
- "qdq": our QDQ ONNX INT8 from converters/passes/quantize.py (channel groups, nodes kept in float), read by
  OpenVINO. That pass only hands over a graph that onnxruntime runs faster than FP32; where it refuses, the
  route is absent and says why. It calibrates and searches again (its own work folder): the price of a
  second INT8 route, reported in `seconds`.
Both are timed with OpenVINO's f32 IR and onnxruntime FP32 in the same alternating rounds; the faster one
that passes ships, unless it is not faster than the f32 IR it replaces (at 1 thread or the profile's threads).

Then the float remainder (the operators left in float, and OpenVINO's own float ops between the int8 ones): where
the profile's CPU and this host compute bfloat16 (AMX-BF16, AVX512-BF16), the chosen IR is judged again with the
bf16 hint and timed against itself in f32; bf16 ships (Artifact.float_precision) if it meets the budget and is
faster at the profile's threads. Measured on PP-OCRv4 rec (AVX512-BF16, OpenVINO 2026.4): 42.1 vs 49.9 ms at 2
threads, 58.1 vs 74.0 ms at 1, where OpenVINO's defaults on the Paddle export (bf16) took 44.9 and 76.6.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtimes.errors import ConversionError

from ..families.base import Evaluation
from ..package import BuiltArtifact
from ..passes.base import ModelFile, PassContext, host_arch
from ..passes.openvino_ir import FrontEnd, ir_files
from ..passes.openvino_latency import (BF16_FLAGS, describe_ms, host_bf16_flags, latency_metrics, refusal_for_target,
                                       time_candidates)
from ..passes.openvino_nncf import NncfQuantizer
from ..passes.quantize import QuantizePass
from ..runners.openvino import OpenVinoRunner, openvino_version
from .base import BuildResult, check_record, target_name
from .openvino_fp import executed_text, front_ends_and_feeds

F32 = "openvino_f32"


@dataclass
class Route:
    name: str                        # nncf / qdq
    xml: Path | None
    evaluation: Evaluation | None
    how: str                         # what was done, in words (or why the route is absent)
    fp32_nodes: list[str]
    details: dict[str, Any]


def _base_ir(ends: list[FrontEnd], fp32: ModelFile, feeds, threads: list[int],
             properties: dict[str, Any]) -> tuple[FrontEnd, dict[str, Any]]:
    """The f32 IR to quantize: the faster front end at the profile's threads (a short timing)."""
    usable = [end for end in ends if end.xml is not None]
    if len(usable) == 1:
        return usable[0], {}
    quick = time_candidates({e.name: (e.xml, "fp32") for e in usable}, fp32.path, feeds, [max(threads)], properties,
                            rounds=3)
    return min(usable, key=lambda e: quick[e.name][max(threads)]), {e.name: quick[e.name] for e in usable}


def _nncf_route(base: FrontEnd, ctx: PassContext, threads: int) -> Route:
    result = NncfQuantizer(base.xml, ctx, threads).run(bool(ctx.options.get("openvino_fallback", True)))
    details = {"quantized": f"the f32 IR of the {base.name} front end", "candidates": result.tried,
               "float_fallback": result.fallback, "seconds": result.seconds}
    if result.best is None:
        return Route("nncf", None, None, f"NNCF {result.fallback}", [], details)
    best = result.best
    how = f"NNCF {best.setting} on the {base.name} front end's f32 IR; float fallback {result.fallback}"
    return Route("nncf", best.xml, best.evaluation, how, best.fp32_nodes, details)


def _qdq_route(fp32: ModelFile, ctx: PassContext, threads: int) -> Route:
    if not ctx.options.get("openvino_qdq", True):
        return Route("qdq", None, None, "not tried (turned off)", [], {})
    import openvino as ov
    started = time.perf_counter()
    work = ctx.workdir / f"{ctx.role}.openvino_qdq"      # its own folder: the onnx int8 builder's files stay
    work.mkdir(parents=True, exist_ok=True)
    result = QuantizePass().run(fp32, PassContext(work, ctx.target, ctx.role, ctx.progress, ctx.options))
    report = result.notes["quantize"]
    details = {"seconds": round(time.perf_counter() - started, 1), "quantize_pass": report["reason"]}
    if not report["accepted"]:
        return Route("qdq", None, None, f"our quantize pass refused its QDQ graph: {report['reason']}", [], details)
    xml = ctx.workdir / f"{ctx.role}.openvino" / "qdq.int8.xml"
    try:
        ov.save_model(ov.Core().read_model(str(result.path)), str(xml), compress_to_fp16=False)
    except RuntimeError as err:
        return Route("qdq", None, None, f"OpenVINO could not read our QDQ graph: {str(err).splitlines()[0]}", [],
                     details)
    family, fp32_models, val = ctx.options["family"], ctx.options["fp32_models"], ctx.options["val_images"]
    runner = OpenVinoRunner(xml, threads, "int8", ctx.target.runtime.openvino)
    verdict = family.evaluate(ctx.role, fp32_models, runner, val)
    ctx.progress(f"{ctx.role}: our QDQ INT8 in OpenVINO: {verdict.describe()}")
    groups = f", {len(report['channel_groups'])} convs in channel groups" if report["channel_groups"] else ""
    how = (f"our QDQ ONNX INT8 ({report['calibration_method']} ranges, {len(report['fp32_nodes'])} nodes in "
           f"float{groups}) read by OpenVINO")
    return Route("qdq", xml, verdict, how, list(report["fp32_nodes"]), details)


def _route_record(route: Route, measured: dict[str, dict[int, float]]) -> dict[str, Any]:
    record = {"how": route.how, **route.details}
    if route.evaluation is not None:
        record["verdict"] = route.evaluation.describe()
    if route.name in measured:
        record["latency_ms"] = {str(t): ms for t, ms in measured[route.name].items()}
    return record


def _refused(routes: list[Route]) -> str:
    return "; ".join(f"{r.name}: {r.evaluation.describe() if r.evaluation else r.how}" for r in routes)


def build_openvino_int8(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    refusal = refusal_for_target(ctx)
    if refusal:
        return BuildResult(None, refusal)
    threads, feeds, ends = front_ends_and_feeds(fp32, ctx)
    if not any(end.xml for end in ends):
        return BuildResult(None, f"refused: no f32 IR to quantize ({'; '.join(e.reason for e in ends)})")
    base, base_timing = _base_ir(ends, fp32, feeds, threads, ctx.target.runtime.openvino)
    try:
        routes = [_nncf_route(base, ctx, max(threads)), _qdq_route(fp32, ctx, max(threads))]
    except ConversionError as err:
        return BuildResult(None, f"refused: {err}")
    passing = [r for r in routes if r.evaluation is not None and r.evaluation.passed]
    if not passing:
        return BuildResult(None, f"refused: no INT8 route met the budget ({_refused(routes)})")
    candidates = {r.name: (r.xml, "int8") for r in passing}
    measured = time_candidates({**candidates, F32: (base.xml, "fp32")}, fp32.path, feeds, threads,
                               ctx.target.runtime.openvino)
    chosen = min(passing, key=lambda r: (measured[r.name][max(threads)], measured[r.name][min(threads)]))
    speed = (f"{describe_ms(measured[chosen.name])} vs the f32 IR's {describe_ms(measured[F32])} "
             f"(onnxruntime FP32: {describe_ms(measured['onnxruntime_fp32'])})")
    if any(measured[chosen.name][t] >= measured[F32][t] for t in threads):
        return BuildResult(None, f"refused: INT8 ({chosen.name}, {chosen.evaluation.describe()}) is not faster than "
                                 f"OpenVINO f32: {speed}")
    remainder = _bf16_remainder(chosen, fp32, feeds, threads, ctx)
    return _ship(chosen, routes, base, base_timing, measured, speed, ctx, remainder)


def _bf16_remainder(chosen: Route, fp32: ModelFile, feeds, threads: list[int], ctx: PassContext) -> dict[str, Any]:
    """The chosen IR's float remainder in bf16, judged and timed against f32 (see the module text); "use" says
    whether it ships so."""
    if not host_bf16_flags() or not any(f in ctx.target.cpu_features for f in BF16_FLAGS):
        return {"use": False, "why": "no bf16 on this host or in the profile's cpu_features"}
    props = ctx.target.runtime.openvino
    runner = OpenVinoRunner(chosen.xml, max(threads), "bf16", props)
    if runner.precision != "bf16":
        return {"use": False, "why": f"OpenVINO compiled it for {runner.precision}, not bf16"}
    verdict = ctx.options["family"].evaluate(ctx.role, ctx.options["fp32_models"], runner, ctx.options["val_images"])
    ctx.progress(f"{ctx.role}: OpenVINO INT8, float remainder in bf16: {verdict.describe()}")
    if not verdict.passed:
        return {"use": False, "why": f"misses: {verdict.describe()}", "verdict": verdict}
    timing = time_candidates({"bf16": (chosen.xml, "bf16"), "f32": (chosen.xml, "int8")}, fp32.path, feeds, threads,
                             props)
    faster = timing["bf16"][max(threads)] < timing["f32"][max(threads)]
    why = f"bf16 {describe_ms(timing['bf16'])} vs f32 {describe_ms(timing['f32'])}"
    return {"use": faster, "why": why if faster else f"not faster: {why}", "verdict": verdict, "timing": timing}


def _ship(chosen: Route, routes: list[Route], base: FrontEnd, base_timing: dict[str, Any],
          measured: dict[str, dict[int, float]], speed: str, ctx: PassContext, remainder: dict[str, Any]) -> BuildResult:
    """The chosen route's IR as `<role>.int8.xml` + `.bin`, with its metrics and check record."""
    xml = ctx.workdir / f"{ctx.role}.int8.xml"
    for src, dst in zip(ir_files(chosen.xml), ir_files(xml)):
        shutil.copyfile(src, dst)
    verdict, threads = chosen.evaluation, max(measured[F32])
    if remainder["use"]:     # what ships is judged and timed as it runs: float remainder in bf16
        verdict = remainder["verdict"]
        measured = {**measured, chosen.name: remainder["timing"]["bf16"]}
    timed = [r.name for r in routes if r.name in measured]
    metrics = {verdict.metric: round(verdict.value, 6), **{k: round(v, 6) for k, v in verdict.extras.items()},
               **latency_metrics(measured, chosen.name, {name: name for name in [*timed, F32]})}
    float_precision = "bf16" if remainder["use"] else None
    runner = OpenVinoRunner(xml, threads, float_precision or "int8", ctx.target.runtime.openvino)
    executed = executed_text("int8", runner, f"IR: {chosen.how}")
    if float_precision:
        executed = (f"this IR in OpenVINO {openvino_version()} CPU on {host_arch()}, int8 operators with the float "
                    f"remainder in {runner.precision} (INFERENCE_PRECISION_HINT bf16, as the device runs this artifact; "
                    f"{runner.threads} thread(s)); IR: {chosen.how}")
    check = check_record(executed, verdict, ctx, None,
                         route=chosen.name, float_remainder=_remainder_record(remainder),
                         openvino=openvino_version(), routes={r.name: _route_record(r, measured) for r in routes},
                         base_f32_ir=base.name,
                         base_f32_timing={n: {str(t): ms for t, ms in v.items()} for n, v in base_timing.items()},
                         latency_ms={str(t): ms for t, ms in measured[chosen.name].items()},
                         latency_ms_openvino_f32={str(t): ms for t, ms in measured[F32].items()},
                         latency_ms_onnxruntime_fp32={str(t): ms for t, ms in measured["onnxruntime_fp32"].items()})
    others = "; ".join(f"{r.name}: {describe_ms(measured[r.name]) if r.name in measured else r.how}"
                       for r in routes if r is not chosen)
    reason = f"{verdict.describe()}; {chosen.how}; {speed}" + (f"; {others}" if others else "")
    if remainder["use"]:
        reason += f"; float remainder in bf16 ({remainder['why']})"
    artifact = BuiltArtifact(xml, "openvino", "int8", ctx.target.quantization, target_name(ctx), metrics,
                             list(chosen.fp32_nodes), checks=[check], companions=[xml.with_suffix(".bin")],
                             float_precision=float_precision)
    return BuildResult(artifact, reason)


def _remainder_record(remainder: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"precision": "bf16" if remainder["use"] else "fp32", "why": remainder["why"]}
    if "verdict" in remainder:
        record["bf16_verdict"] = remainder["verdict"].describe()
    for name, per_thread in remainder.get("timing", {}).items():
        record[f"latency_ms_{name}"] = {str(t): ms for t, ms in per_thread.items()}
    return record
