"""Calibrated static INT8 that must earn its place: within the task's accuracy budget and faster.

Steps (numbers measured on PP-OCRv4, see bench/quant_ocr.py):
1. `int8_form`: rewrite the optimised FP32 graph so that onnxruntime can run it all in integer
   kernels - HardSwish becomes x * Clip(x + 3, 0, 6) (QLinearAdd + QLinearMul; its 1/6 is folded
   into the next conv), Conv -> HardSigmoid becomes Conv' -> Clip(0, 1). onnxruntime has no integer
   HardSwish/HardSigmoid, so otherwise each sits between a dequantize and a quantize (det: 41% of
   INT8 time). The rewrite is exact in float; it is checked like the optimize pass.
2. Ranges from one calibration run (converters.calibration): MinMax, 99.999th and 99.99th percentile.
3. Candidates with each range method are scored with the family metric against FP32 on the
   validation images. If none meets the budget: first the convolutions whose narrow output channels
   suffer most from one per-tensor range are split into channel groups (channel_groups.py), the
   worst 1, 2, 4, ..., re-calibrated each time; then, as a last
   resort, the nodes whose outputs lose the most SQNR vs FP32 are kept in float, 1, 2, 4, ...
4. Latency vs the FP32 input at 1 thread and at the profile's threads, alternating A/B. An INT8
   model that misses its budget or is not faster is refused: the FP32 input is returned unchanged.

Measured (1 thread, ratio to the exported FP32 graph): det 0.43 with box F1 0.993 (2 nodes float),
rec 0.35 with CER 1.3%; the plain pipeline (basic graph, MinMax) gave det 0.63 / F1 0.968 and rec
0.58 / CER 4.5%. ppocr cls INT8 is 1.7-1.9x slower than FP32 at any setting and is refused.

On a CUDA target (Jetson: TensorRT) steps 2-3 run on TensorRT's explicit-quantization form instead
(tensorrt_form.py: no step-1 rewrite, Q/DQ only where TensorRT fuses it), and step 4 is the device's.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from runtimes.errors import ConversionError

from ..calibration import RANGE_METHODS, FeedListReader, TensorStats, collect_stats, write_range_cache
from ..families.base import Evaluation, Family
from ..latency import compare
from .base import ModelFile, Pass, PassContext
from .channel_groups import hoist_concat_scale, plan, split_channel_groups
from .graph_rewrites import (Graph, attr, conv_weights, drop_dead, fold_affine_into_next_conv, fuse_hardswish,
                             set_conv_params, topological_sort)
from .optimize import PARITY_RTOL, output_drift
from .quant_layout import QuantLayout, quantize_with
from .tensorrt_form import SCHEME as TENSORRT_SCHEME, TENSORRT

# CPU layouts: scheme (device_profiles.schema.QuantScheme) -> (activation type, weight type, symmetric
# activations); on a CUDA target the s8 scheme takes TensorRT's form instead (tensorrt_form.py)
SCHEMES = {"qdq-u8a-s8w": ("QUInt8", "QInt8", False),   # CPU (x86 and ARM): integer kernels fuse these
           "qdq-s8a-s8w": ("QInt8", "QInt8", True)}
DEFAULT_SCHEME = "qdq-u8a-s8w"   # signed activations are not fused on x86 (1.1-4.2x slower than FP32)
CALIBRATION_LIMIT = 16          # inputs; rec on all 58 crop batches: CER 1.5%, on 16: 1.3-1.4%
LATENCY_FEEDS, LATENCY_ROUNDS = 4, 7
STALE_STEPS = 2               # doublings of the float set without any gain before giving up
SEARCH_STEPS = (1, 2, 4, 8, 16, 32)   # nodes kept in float, tried in this order
RANKING_FEEDS = 2
# Folded into the producer's output range by the QDQ quantizer: keeping them float only costs time.
REMOVABLE = {"Relu", "Clip"}


def hardswish_to_int8_form(model: onnx.ModelProto) -> int:
    """HardSwish(x) -> Mul(Mul(x, Clip(Add(x, 3), 0, 6)), 1/6); the 1/6 is folded into the next conv later."""
    g, done = Graph(model), 0
    names = {}
    for node in list(g.g.node):
        if node.op_type != "HardSwish":
            continue
        if not names:
            names = {k: g.add_const(f"int8form_{k}", np.array(v)) for k, v in
                     (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("sixth", 1 / 6))}
        x, y = node.input[0], node.output[0]
        g.g.node.extend([
            helper.make_node("Add", [x, names["three"]], [f"{y}_p3"], name=f"{node.name}_add3"),
            helper.make_node("Clip", [f"{y}_p3", names["zero"], names["six"]], [f"{y}_relu6"],
                             name=f"{node.name}_clip"),
            helper.make_node("Mul", [x, f"{y}_relu6"], [f"{y}_x6"], name=f"{node.name}_mul"),
            helper.make_node("Mul", [f"{y}_x6", names["sixth"]], [y], name=f"{node.name}_div6")])
        g.drop(node)
        done += 1
    g.commit()
    return done


def conv_hardsigmoid_to_clip(model: onnx.ModelProto) -> int:
    """Conv -> HardSigmoid(alpha, beta)  ==>  Conv(W*alpha, B*alpha + beta) -> Clip(0, 1)."""
    g, done = Graph(model), 0
    bounds: list[str] = []
    for conv in list(g.g.node):
        gate = g.only_consumer(conv.output[0]) if conv.op_type == "Conv" else None
        params = conv_weights(g, conv) if gate is not None and gate.op_type == "HardSigmoid" else None
        if params is None:
            continue
        bounds = bounds or [g.add_const("int8form_zero", np.array(0.0)), g.add_const("int8form_one", np.array(1.0))]
        alpha, beta = attr(gate, "alpha", 0.2), attr(gate, "beta", 0.5)
        set_conv_params(g, conv, params[0] * alpha, params[1] * alpha + beta)
        g.g.node.append(helper.make_node("Clip", [conv.output[0], *bounds], [gate.output[0]], name=f"{gate.name}_clip"))
        g.drop(gate)
        done += 1
    g.commit()
    return done


def int8_form(src: Path, dst: Path, seeds: list[str] = (), peaks: dict[str, np.ndarray] | None = None) -> dict[str, int]:
    """The int8-friendly rewrite of `src`; the `seeds` convolutions are split into channel groups
    (channel_groups.py; `peaks`: every activation's per-channel peaks, from channel_groups.plan)."""
    model = onnx.load(str(src))
    fuse_hardswish(model)    # graphs kept at opset 13 still carry Mul(x, HardSigmoid(x))
    topological_sort(model)
    counts = {"channel_groups": split_channel_groups(model, peaks or {}, list(seeds))} if seeds else {}
    counts.update(hardswish=hardswish_to_int8_form(model), hardsigmoid=conv_hardsigmoid_to_clip(model))
    topological_sort(model)
    if seeds:
        counts["concat_scale_hoisted"] = hoist_concat_scale(model)
    counts["scale_folded"] = fold_affine_into_next_conv(model)
    topological_sort(model)
    drop_dead(model)
    onnx.save(model, str(dst))
    return counts


# (target accelerator, scheme) -> how the calibrated graph is laid out for the runtime that executes it
LAYOUTS: dict[tuple[str, str], QuantLayout] = {
    **{("cpu", scheme): QuantLayout(f"onnxruntime cpu {scheme}", act, weight, {"ActivationSymmetric": symmetric},
                                    int8_form) for scheme, (act, weight, symmetric) in SCHEMES.items()},
    ("cuda", TENSORRT_SCHEME): TENSORRT,
}


@dataclass
class Prepared:
    """An int8-form graph and its calibrated ranges; candidates differ in range method and float nodes."""
    path: Path
    stats: dict[str, TensorStats]
    channel_groups: list[str]      # seed convolutions split into channel groups (channel_groups.py)
    counts: dict[str, Any]


@dataclass
class Candidate:
    path: Path
    method: str
    fp32_nodes: list[str]
    evaluation: Evaluation
    channel_groups: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"method": self.method, "fp32_nodes": len(self.fp32_nodes), "value": round(self.evaluation.value, 5),
                "passed": self.evaluation.passed, "channel_groups": len(self.channel_groups)}


def build_int8(src: Path, dst: Path, cache: Path, scheme: str, exclude: list[str],
               layout: QuantLayout | None = None) -> Path:
    """`src` quantized with the ranges in `cache` (default: the CPU layout of `scheme`)."""
    return quantize_with(layout or LAYOUTS[("cpu", scheme)], src, dst, cache, exclude)


def sqnr_drop_ranking(float_path: Path, int8_path: Path, feeds: list[dict], workdir: Path) -> list[str]:
    """Node names, worst first: how much SQNR vs FP32 each node's output loses relative to its inputs."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors
    values = {}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # simulate, do not fuse
    opts.log_severity_level = 3
    for tag, path in (("float", float_path), ("int8", int8_path)):
        augmented = workdir / f"{path.stem}.probe.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        values[tag] = collect_activations(str(augmented), FeedListReader(feeds), session_options=opts)
        augmented.unlink()

    def sqnr(name: str) -> float | None:
        ref = values["float"].get(name)
        got = values["int8"].get(f"{name}_DequantizeLinear_Output", values["int8"].get(name))
        if ref is None or got is None:
            return None
        a, b = np.concatenate([r.ravel() for r in ref]), np.concatenate([q.ravel() for q in got])
        return 20 * math.log10(max(np.linalg.norm(a), 1e-12) / max(np.linalg.norm(a - b), 1e-12))

    model = onnx.load(str(float_path))
    weights = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    drops = []
    for node in model.graph.node:
        if node.op_type in REMOVABLE:
            continue
        out = sqnr(node.output[0])
        names = [i for i in node.input if i and i not in weights]
        ins = [s for s in (sqnr(i) for i in names) if s is not None]
        if not ins and names and all(i in graph_inputs for i in names):
            ins = [100.0]    # fed by the model input itself: only its own quantization counts
        if out is not None and ins:
            drops.append((min(ins) - out, node.name))
    return [name for _, name in sorted(drops, reverse=True)]


def _ratio_text(ms: dict[str, float], threads: list[int]) -> str:
    return ", ".join(f"{ms[f'int8@{t}']:.1f} vs {ms[f'fp32@{t}']:.1f} ms at {t} thread{'s' * (t > 1)}"
                     for t in threads)


def by_method(make, first_pass: bool) -> list[Candidate]:
    """A candidate per range method, in RANGE_METHODS order; with `first_pass`, up to the first within budget."""
    found = []
    for method in RANGE_METHODS:
        found.append(make(method))
        if first_pass and found[-1].evaluation.passed:
            break
    return found


def thread_counts(profile_threads: int) -> list[int]:
    """1 and the profile's threads, capped at this host's cores (0: all of them)."""
    cores = os.cpu_count() or 1
    return sorted({1, min(profile_threads or cores, cores)})


class QuantizePass(Pass):
    """Static INT8 with calibration, accuracy budget, node fallback and a latency check."""

    name = "quantize"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        started = time.perf_counter()
        family: Family = ctx.options.get("family")
        fp32: dict[str, Path] = ctx.options.get("fp32_models") or {}
        # calibration pictures in path order, as `edge convert` lists them (converters/pictures.py): which inputs
        # calibrate depends on it (OCR rec: 16 line batches spread over all of them), so a pass run on its own
        # (bench/quant_ocr.py, tests) calibrates as the convert does and reaches the same INT8 decision
        calib = sorted(Path(p) for p in ctx.options.get("calib_images") or [])
        val = list(ctx.options.get("val_images") or [])
        if family is None or ctx.role not in fp32 or not calib or not val:
            raise ConversionError(f"quantize {ctx.role}: needs a task family, the FP32 models and calibration "
                                  "and validation images (give --calib)")
        scheme = ctx.target.quantization or DEFAULT_SCHEME
        layout = LAYOUTS.get((ctx.target.accelerator, scheme))
        if layout is None:
            raise ConversionError(f"quantize {ctx.role}: no '{scheme}' quantization for a {ctx.target.accelerator} "
                                  f"target (known: {', '.join(f'{s} on {a}' for a, s in LAYOUTS)})")
        threads = thread_counts(int(ctx.options.get("threads") or 0))
        work = ctx.workdir
        notes: dict[str, Any] = {"scheme": scheme, "layout": layout.name, "candidates": []}

        lat_feeds = family.latency_feeds(ctx.role, fp32, val, LATENCY_FEEDS)
        feeds = family.calibration_feeds(ctx.role, fp32, calib, int(ctx.options.get("calib_limit", CALIBRATION_LIMIT)))

        def prepare(seeds: list[str], peaks: dict[str, np.ndarray] | None = None) -> Prepared | None:
            """The int8 form (`seeds` split into channel groups), proven equal to FP32, with its ranges."""
            path = work / f"{ctx.role}.int8form.g{len(seeds)}.onnx"
            counts = layout.prepare(model.path, path, seeds, peaks)
            if output_drift(model.path, path, lat_feeds[:2]) > PARITY_RTOL:
                return None
            known = graphs[0].stats if seeds and 0 in graphs else None     # most tensors keep their ranges
            graphs[len(seeds)] = Prepared(path, collect_stats(path, feeds, work, threads=max(threads), known=known),
                                          list(seeds), counts)
            return graphs[len(seeds)]

        graphs: dict[int, Prepared] = {}     # channel-group count -> its prepared graph
        base = prepare([])
        if base is None:
            base = graphs[0] = Prepared(model.path, collect_stats(model.path, feeds, work, threads=max(threads)), [],
                                        {"skipped": "the rewrite changed outputs"})
        notes["int8_form"] = base.counts
        notes["calibration"] = {"inputs": len(feeds), "images": len(calib), "validation_images": len(val)}
        ctx.progress(f"quantize {ctx.role}: calibrated on {len(feeds)} inputs from {len(calib)} images")

        def candidate(method: str, exclude: list[str], graph: Prepared = base) -> Candidate:
            tag = f"{method}.g{len(graph.channel_groups)}.{len(exclude)}"
            cache = write_range_cache(graph.stats, method, work / f"{ctx.role}.ranges.{tag}.json")
            out = build_int8(graph.path, work / f"{ctx.role}.int8.{tag}.onnx", cache, scheme, exclude, layout)
            judged = layout.judge(out, max(threads)) if layout.judge else out
            found = Candidate(out, method, exclude, family.evaluate(ctx.role, fp32, judged, val), graph.channel_groups)
            notes["candidates"].append(found.row())
            groups = f", {len(graph.channel_groups)} convs in channel groups" if graph.channel_groups else ""
            ctx.progress(f"quantize {ctx.role}: {method} ranges, {len(exclude)} nodes in float{groups}: "
                         f"{found.evaluation.describe()}")
            return found

        measurable = ctx.target.runs_on_host()     # an aarch64 or CUDA target cannot be timed here
        # Where this host times INT8, every range method is judged and the most faithful ships (they run
        # equally fast). Where it cannot, speed is the device's to measure and accuracy beyond the budget
        # buys nothing: the first method within budget, in RANGE_METHODS order, ends the step.
        first_pass = not measurable
        tried = by_method(lambda method: candidate(method, []), first_pass)
        if measurable:
            # Speed first: if the all-integer graph is not faster, keeping nodes in float will not make it so.
            quick = compare({"fp32": model.path, "int8": tried[0].path}, lat_feeds, 1, 3)
            if quick.ratio("int8", "fp32") >= 1.0:
                notes.update(self._latency(model.path, tried[0].path, lat_feeds, threads))
                return self._refuse(model, notes, tried[0], "INT8 is slower than FP32 even with every node in "
                                    f"integer ({_ratio_text(notes['latency_ms'], threads)})", started)
        best = max(tried, key=lambda c: c.evaluation.rank)
        if not best.evaluation.passed and (base.counts.get("hardswish") or base.counts.get("hardswish_kept")):
            ranked, peaks = plan(model.path, feeds, work)
            notes["channel_group_seeds_ranked"] = len(ranked)
            best = self._channel_groups(best, candidate, prepare, ranked, peaks, first_pass)
        if not best.evaluation.passed:      # last resort: single nodes in float, on the best graph so far
            graph = graphs.get(len(best.channel_groups), base)
            found = self._search(best, graph, candidate, lat_feeds, work, layout.fallback_ops)
            best = max((best, found), key=lambda c: c.evaluation.rank)
        if not best.evaluation.passed:
            if measurable:   # for the record only: the decision is already made
                notes.update(self._latency(model.path, best.path, lat_feeds, threads, rounds=3))
            return self._refuse(model, notes, best, "no INT8 candidate met the budget "
                                f"(best: {best.evaluation.describe()})", started)
        if not measurable:
            where = ctx.target.arch if ctx.target.accelerator == "cpu" else ctx.target.accelerator
            notes["latency_not_measured"] = f"target runs on {where}; this host cannot time it (the device does)"
            reason = f"{best.evaluation.describe()}; latency not measured ({where} target: the device measures it)"
            return self._accept(model, notes, best, reason, started, ctx)
        notes.update(self._latency(model.path, best.path, lat_feeds, threads))
        if Path(fp32[ctx.role]) != Path(model.path):   # for the record: vs the unoptimised export too
            notes["latency_ratio_vs_unoptimised_fp32"] = round(
                compare({"fp32": fp32[ctx.role], "int8": best.path}, lat_feeds, 1, 3).ratio("int8", "fp32"), 4)
        speed = _ratio_text(notes["latency_ms"], threads)
        if max(notes["latency_ratio"], notes["latency_ratio_1thread"]) >= 1.0:
            return self._refuse(model, notes, best, f"INT8 is not faster than FP32 ({speed})", started)
        groups = f"; {len(best.channel_groups)} convs in channel groups" if best.channel_groups else ""
        return self._accept(model, notes, best, f"{best.evaluation.describe()}{groups}; {speed}", started, ctx)

    def _search(self, base: Candidate, graph: Prepared, make, feeds, work: Path,
                ops: frozenset[str] = frozenset()) -> Candidate:
        """Keep the worst nodes of the best candidate so far (it missed), on its own graph (channel groups
        included), in float until one passes (only nodes of `ops`, if given: the layout quantizes nothing else).
        (picodet_s_320_coco for a Jetson calibrated on 2 keypoint pictures: float nodes on the plain graph
        scored box F1 0.00, on top of its 8 convs in channel groups 0.94; neither passed 0.95.)"""
        ranking = sqnr_drop_ranking(graph.path, base.path, feeds[:RANKING_FEEDS], work)
        if ops:
            kinds = {n.name: n.op_type for n in onnx.load(str(graph.path)).graph.node}
            ranking = [name for name in ranking if kinds.get(name) in ops]
        best, stale = base, 0
        for count in SEARCH_STEPS:
            if count > len(ranking) or stale >= STALE_STEPS:
                break       # more float nodes stopped helping: the cause is not a few sensitive nodes
            found = make(base.method, ranking[:count], graph)
            if found.evaluation.passed:
                return found
            stale = 0 if found.evaluation.rank > best.evaluation.rank else stale + 1
            best = max((best, found), key=lambda c: c.evaluation.rank)
        return best

    @staticmethod
    def _channel_groups(best: Candidate, make, prepare, ranked: list[str], peaks, first_pass: bool) -> Candidate:
        """Split the worst 1, 2, 4, ... seed convolutions into channel groups (channel_groups.py) until a
        candidate meets the budget; fewest first, since every split costs time."""
        counts = [c for c in SEARCH_STEPS if c < len(ranked)] + [len(ranked)] if ranked else []
        stale = 0
        for count in counts:
            if stale >= STALE_STEPS:
                break      # checked before preparing: a rewrite + calibration run the search would not use
            graph = prepare(ranked[:count], peaks)
            if graph is None:
                break
            found = by_method(lambda method: make(method, [], graph), first_pass)
            top = max(found, key=lambda c: c.evaluation.rank)
            if top.evaluation.passed:
                return top
            stale = 0 if top.evaluation.rank > best.evaluation.rank else stale + 1
            best = max((best, top), key=lambda c: c.evaluation.rank)
        return best

    @staticmethod
    def _latency(fp32: Path, int8: Path, feeds, threads: list[int], rounds: int = LATENCY_ROUNDS) -> dict[str, Any]:
        """Flat numbers (the bundle's artifact metrics take floats): ms per model@threads and ratios."""
        ms, ratio = {}, {}
        for t in threads:
            lat = compare({"fp32": fp32, "int8": int8}, feeds, t, rounds)
            ms[f"fp32@{t}"], ms[f"int8@{t}"] = round(lat.median_ms["fp32"], 3), round(lat.median_ms["int8"], 3)
            ratio[t] = round(lat.ratio("int8", "fp32"), 4)
        return {"latency_ms": ms, "latency_ratio": ratio[max(threads)], "latency_ratio_1thread": ratio[1],
                "latency_threads": max(threads)}

    @staticmethod
    def _verdict(accepted: bool, chosen: Candidate, reason: str, started: float) -> dict[str, Any]:
        ev = chosen.evaluation
        return {"accepted": accepted, "reason": reason, "metric": ev.metric, "value": round(ev.value, 6),
                "extras": {k: round(v, 6) for k, v in ev.extras.items()},
                "budget": ev.budget, "budget_is": "max" if ev.lower_is_better else "min", "samples": ev.samples,
                "within_budget": ev.passed,     # the value and every extra measurement the family checks
                "fp32_nodes": list(chosen.fp32_nodes), "channel_groups": list(chosen.channel_groups),
                "calibration_method": chosen.method, "seconds": round(time.perf_counter() - started, 1)}

    def _accept(self, model: ModelFile, notes: dict[str, Any], chosen: Candidate, reason: str, started: float,
                ctx: PassContext) -> ModelFile:
        notes.update(self._verdict(True, chosen, reason, started))
        ctx.progress(f"quantize {ctx.role}: accepted: {reason}")
        return ModelFile(chosen.path, "onnx", "int8", {**model.notes, "quantize": notes})

    def _refuse(self, model: ModelFile, notes: dict[str, Any], chosen: Candidate, reason: str,
                started: float) -> ModelFile:
        notes.update(self._verdict(False, chosen, reason, started))
        return ModelFile(model.path, model.format, model.precision, {**model.notes, "quantize": notes})
