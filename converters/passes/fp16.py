"""FP32 ONNX -> FP16 ONNX for TensorRT/CUDA (Jetson), inputs and outputs kept FP32, judged against FP32.

The conversion is onnxconverter-common's (`float16.convert_float_to_float16`, keep_io_types=True);
this pass decides which nodes stay in FP32, by name (`node_block_list`), and records why:

1. *activation*: the FP32 reference runs on the calibration inputs (`activation_peaks`); a node that
   writes or reads a tensor whose largest |x| exceeds ACTIVATION_LIMIT stays FP32 (its readers too: the
   Cast to FP16 an FP16 reader needs would overflow just the same).
2. *weights*: a node with a float weight beyond FP16's largest value. The converter's own clamp for
   weights is raised from 1e4 to that value, so no weight FP16 can hold is changed silently.
3. *converter*: onnxconverter-common's default FP32 operator list (Resize, TopK, NonMaxSuppression, ...).
4. *metric*: a candidate that misses the family budget on the judging pictures gets the nodes whose
   output drifts most from FP32 (SQNR lost relative to their inputs, on calibration inputs) kept in
   FP32 together with the readers of that output, 1, 2, 4, ... nodes, until it passes; else refused.

How a candidate is judged: nothing on this host executes FP16 arithmetic for these graphs. onnxruntime's
CPU provider (1.32, x86_64) runs an FP16 file's Conv, Add, Mul, Clip, pooling and activations on float32:
it casts their inputs, and drops the Casts it inserted between two such operators (insert_cast_transformer.cc:
"Casts in between converted nodes cancel each other out"), so the file runs with FP16 weights but mostly
FP32 activations (its profile says which kernels read float16; converters/builders/onnx_fp16.py records
it). So each candidate is judged as its *FP16 storage twin* (`storage_twin`): the file with every FP16
operator reading its inputs through explicit Casts to FP32 and writing through explicit Casts to FP16.
onnxruntime executes explicit Casts, so every tensor between FP16 operators is stored in FP16 (rounding
and overflow to inf included) while each operator computes in FP32: FP16 storage, not FP16 arithmetic.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtimes.errors import ConversionError

from ..calibration import float_tensors
from ..latency import session
from ..families.base import Evaluation, Family
from ..runners.onnx_unoptimized import OnnxUnoptimizedRunner
from .base import ModelFile, Pass, PassContext

FP16_MAX = 65504.0
# Activations may reach 1/8 of FP16's range on the calibration pictures. Why 8: the pictures a device
# sees were not measured. Over the five families (bench/jetson_fp16.py's picture sets), a tensor's
# largest |x| on the judging pictures was up to 2.5x its largest on the calibration pictures (2.0x
# among tensors above 50): 4x covers that; another 2x because an FP16 engine may fuse layers and sum
# in FP16 inside them, so values exist that we cannot observe here (partial sums, fused intermediates).
# The largest activations measured: PicoDet 4013 (a hard-swish product before its /6), PP-OCRv4 det
# 3438, TinyPose 1022, PP-OCRv4 rec 437 (a layer norm's squares): all below the limit, 8188.
ACTIVATION_MARGIN = 8.0
ACTIVATION_LIMIT = FP16_MAX / ACTIVATION_MARGIN
WEIGHT_LIMIT = FP16_MAX           # weights are known exactly: only a value FP16 cannot hold must stay FP32
CALIBRATION_LIMIT = 16            # inputs for the ranges (as converters/passes/quantize.py)
RANKING_FEEDS = 2                 # inputs for the per-node drift ranking
SEARCH_STEPS = (1, 2, 4, 8, 16, 32)
STALE_STEPS = 2                   # doublings of the FP32 set without any gain before giving up


def default_fp32_ops() -> set[str]:
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST
    return set(DEFAULT_OP_BLOCK_LIST)


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every node a unique name (the converter keeps nodes in FP32 by name)."""
    seen, renamed = set(), 0
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"edge_fp16_node{index}"
            renamed += 1
        seen.add(node.name)
    return renamed


def unshare_weights(model: onnx.ModelProto, kept: set[str]) -> int:
    """A float initializer read by an FP32 node and by an FP16 node gets a copy for the FP32 node:
    the converter leaves it FP32 for both, and the FP16 node would then be fed the wrong type."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                readers.setdefault(name, []).append(node)
    copies = 0
    for name, nodes in readers.items():
        if len({n.name in kept for n in nodes}) < 2:
            continue
        for node in (n for n in nodes if n.name in kept):
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}__fp32_for_{node.name}"
            graph.initializer.append(copy)
            node.input[:] = [copy.name if i == name else i for i in node.input]
            copies += 1
    return copies


def activation_peaks(model_path: Path, feeds: list[dict], workdir: Path, threads: int) -> dict[str, float]:
    """Largest |x| of every float activation over `feeds` (the tensors converters.calibration measures,
    extremes only: its percentile TopK outputs took 48 s on PP-OCRv4 rec's 16 inputs, this a few)."""
    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    outputs = [f"edge_fp16_peak{i}" for i in range(len(tensors))]
    for name, out in zip(tensors, outputs):
        model.graph.node.extend([helper.make_node("Abs", [name], [f"{out}_abs"]),
                                 helper.make_node("ReduceMax", [f"{out}_abs"], [out], keepdims=0)])
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
    probe = workdir / f"{model_path.stem}.peaks.onnx"
    onnx.save(model, str(probe))
    try:
        sess = session(probe, threads)
        peaks = dict.fromkeys(tensors, 0.0)
        for feed in feeds:
            for name, value in zip(tensors, sess.run(outputs, feed)):
                peaks[name] = max(peaks[name], float(value))
    finally:
        probe.unlink(missing_ok=True)
    return peaks


def overflow_nodes(model: onnx.ModelProto, peaks: dict[str, float]) -> dict[str, str]:
    """Nodes that read or write a tensor whose measured |x| exceeds ACTIVATION_LIMIT, with why."""
    kept = {}
    for node in model.graph.node:
        for role, names in (("writes", node.output), ("reads", node.input)):
            hot = [(peaks[n], n) for n in names if n in peaks and peaks[n] > ACTIVATION_LIMIT]
            if hot:
                peak, tensor = max(hot)
                kept[node.name] = (f"activation: {role} '{tensor}', |x| up to {peak:.4g} on the calibration "
                                   f"inputs (FP16 max {FP16_MAX:g}, limit {ACTIVATION_LIMIT:.4g} = 1/"
                                   f"{ACTIVATION_MARGIN:g} of it)")
                break
    return kept


def weight_overflow_nodes(model: onnx.ModelProto) -> dict[str, str]:
    inits = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    kept = {}
    for node in model.graph.node:
        tensors = [numpy_helper.to_array(inits[n]) for n in node.input if n in inits]
        tensors += [numpy_helper.to_array(a.t) for a in node.attribute
                    if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT]
        peak = max((float(np.max(np.abs(t))) for t in tensors if t.size), default=0.0)
        if peak > WEIGHT_LIMIT:
            kept[node.name] = f"weights: |w| up to {peak:.4g}, beyond FP16's largest value {FP16_MAX:g}"
    return kept


def converter_fp32_nodes(model: onnx.ModelProto) -> dict[str, str]:
    ops = default_fp32_ops()
    return {n.name: f"converter: onnxconverter-common keeps {n.op_type} in FP32 (its default operator list)"
            for n in model.graph.node if n.op_type in ops}


def to_fp16(src: Path, dst: Path, kept: set[str]) -> Path:
    """The FP16 file: every node not in `kept` computes in FP16; graph inputs and outputs stay FP32."""
    from onnxconverter_common.float16 import convert_float_to_float16
    model = onnx.load(str(src))
    name_nodes(model)
    unshare_weights(model, kept | {n.name for n in model.graph.node if n.op_type in default_fp32_ops()})
    with warnings.catch_warnings():      # "the float32 number 1e-09 will be truncated to 1e-07": FP16's floor
        warnings.simplefilter("ignore")
        try:
            converted = convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX,
                                                 node_block_list=sorted(kept))
        except Exception as err:    # the converter raises assorted exceptions (ValueError, AssertionError)
            raise ConversionError(f"fp16: onnxconverter-common could not convert {src.name}: "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ConversionError(f"fp16: the converted {src.name} is not a valid ONNX model: "
                              f"{str(err).splitlines()[0]}") from None
    onnx.save(converted, str(dst))
    return dst


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def storage_twin(src: Path, dst: Path) -> tuple[Path, int]:
    """`src` with every operator that reads FP16 tensors reading them through explicit Casts to FP32 and
    writing its FP16 outputs through explicit Casts to FP16: FP16 between operators, FP32 inside them.
    Returns the twin and how many Casts it holds (the builder checks onnxruntime ran them all)."""
    model = onnx.load(str(src))
    types = value_types(model)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type == "Cast" or not any(types.get(n) == TensorProto.FLOAT16 for n in node.input if n):
            nodes.append(node)
            continue
        widened: dict[str, str] = {}          # one Cast per tensor, also when a node reads it twice (x + x)
        for slot, name in enumerate(node.input):
            if name and types.get(name) == TensorProto.FLOAT16:
                if name not in widened:
                    widened[name] = f"{name}__f32_for_{node.name}"
                    nodes.append(helper.make_node("Cast", [name], [widened[name]], name=f"{widened[name]}_cast",
                                                  to=TensorProto.FLOAT))
                node.input[slot] = widened[name]
        rounding = []
        for slot, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT16:
                node.output[slot] = f"{name}__f32"
                rounding.append(helper.make_node("Cast", [node.output[slot]], [name], name=f"{name}__to_f16",
                                                 to=TensorProto.FLOAT16))
        nodes += [node, *rounding]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]          # stale types of the rewired outputs; onnxruntime infers them
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst, sum(1 for n in nodes if n.op_type == "Cast")


def _activations(path: Path, feeds: list[dict], workdir: Path) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors
    from ..calibration import FeedListReader
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # the graph as written
    opts.log_severity_level = 3
    augmented = workdir / f"{path.stem}.probe.onnx"
    modify_model_output_intermediate_tensors(str(path), str(augmented))
    try:
        return collect_activations(str(augmented), FeedListReader(feeds), session_options=opts)
    finally:
        augmented.unlink()


def drift_ranking(reference: Path, twin: Path, feeds: list[dict], workdir: Path) -> list[tuple[str, float]]:
    """(node, SQNR it loses relative to its inputs in dB), worst first: where FP16 storage hurts most."""
    ref, got = _activations(reference, feeds, workdir), _activations(twin, feeds, workdir)

    def db(exact: list[np.ndarray], approx: list[np.ndarray]) -> float:
        a = np.concatenate([r.ravel().astype(np.float64) for r in exact])
        b = np.concatenate([g.ravel().astype(np.float64) for g in approx])
        if not np.all(np.isfinite(b)):
            return -math.inf          # overflowed to inf (or NaN after it): nothing of the signal is left
        return 20 * math.log10(max(np.linalg.norm(a), 1e-12) / max(np.linalg.norm(a - b), 1e-12))

    for name in feeds[0]:       # the picture as the FP16 graph sees it: rounded to FP16 once, on the way in
        ref[name] = [f[name] for f in feeds]
        got[name] = [x.astype(np.float16) for x in ref[name]]

    def sqnr(name: str) -> float | None:
        return db(ref[name], got[name]) if name in ref and name in got else None

    model = onnx.load(str(reference))
    weights = {t.name for t in model.graph.initializer}
    drops = []
    for node in model.graph.node:
        out = sqnr(node.output[0])
        names = [i for i in node.input if i and i not in weights]
        ins = [s for s in (sqnr(i) for i in names) if s is not None]
        if out is not None and ins:
            if out == -math.inf:       # where inf first appears, not every node downstream of it
                drops.append((math.inf if min(ins) > -math.inf else 0.0, node.name))
            else:
                drops.append((min(ins) - out, node.name))
    return [(name, drop) for drop, name in sorted(drops, reverse=True)]


@dataclass
class Candidate:
    path: Path
    twin: Path
    casts: int
    kept: dict[str, str]
    evaluation: Evaluation

    def row(self) -> dict[str, Any]:
        return {"fp32_nodes": len(self.kept), "value": round(self.evaluation.value, 6),
                "passed": self.evaluation.passed}


@dataclass
class Judge:
    """Builds and judges candidates for one role; remembers every candidate for the record."""
    reference: Path
    ctx: PassContext
    family: Family
    fp32: dict[str, Path]
    val: list[Path]
    threads: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, kept: dict[str, str]) -> Candidate:
        work, role = self.ctx.workdir, self.ctx.role
        tag = f"fp16.c{len(self.rows)}"      # candidate number: each its own files
        path = to_fp16(self.reference, work / f"{role}.{tag}.onnx", set(kept))
        twin, casts = storage_twin(path, work / f"{role}.{tag}.storage_twin.onnx")
        with OnnxUnoptimizedRunner(twin, self.threads) as runner:
            evaluation = self.family.evaluate(role, self.fp32, runner, self.val)
        found = Candidate(path, twin, casts, dict(kept), evaluation)
        self.rows.append(found.row())
        self.ctx.progress(f"fp16 {role}: {len(kept)} nodes in FP32, FP16 between operators: {evaluation.describe()}")
        return found


class Fp16Pass(Pass):
    """FP16 with inputs/outputs FP32; nodes kept in FP32 for overflow, the converter, or the metric."""

    name = "fp16"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        started = time.perf_counter()
        family, fp32, calib, val = _needs(model, ctx)
        threads = min(int(ctx.options.get("threads") or 0) or (os.cpu_count() or 1), os.cpu_count() or 1)
        reference, named = onnx.load(str(model.path)), model.path
        if name_nodes(reference):       # every node needs a name to be kept by it
            named = ctx.workdir / f"{ctx.role}.named.onnx"
            onnx.save(reference, str(named))
        feeds = family.calibration_feeds(ctx.role, fp32, calib, int(ctx.options.get("calib_limit", CALIBRATION_LIMIT)))
        peaks = activation_peaks(named, feeds, ctx.workdir, threads)
        kept = {**converter_fp32_nodes(reference), **weight_overflow_nodes(reference),
                **overflow_nodes(reference, peaks)}
        notes: dict[str, Any] = {"activation_limit": ACTIVATION_LIMIT, "activation_margin": ACTIVATION_MARGIN,
                                 "largest_activation": _largest(peaks),
                                 "calibration": {"inputs": len(feeds), "images": len(calib),
                                                 "validation_images": len(val)}}
        judge = Judge(named, ctx, family, fp32, val, threads)
        best = judge(kept)
        if not best.evaluation.passed:
            best = self._search(best, judge, named, feeds[:RANKING_FEEDS], ctx, notes)
        notes["candidates"] = judge.rows
        notes.update(_verdict(best, started))
        if not best.evaluation.passed:
            notes["reason"] = (f"no FP16 candidate met the budget (best: {best.evaluation.describe()} with "
                               f"{len(best.kept)} nodes in FP32)")
            return ModelFile(model.path, model.format, model.precision, {**model.notes, "fp16": notes})
        causes = ", ".join(f"{cause} {n}" for cause, n in _kept_by(best.kept).items()) or "none"
        notes["reason"] = f"{best.evaluation.describe()}; {len(best.kept)} nodes in FP32 ({causes})"
        ctx.progress(f"fp16 {ctx.role}: accepted: {notes['reason']}")
        return ModelFile(best.path, "onnx", "fp16", {**model.notes, "fp16": notes})

    @staticmethod
    def _search(first: Candidate, judge: Judge, reference: Path, feeds: list[dict], ctx: PassContext,
                notes: dict[str, Any]) -> Candidate:
        """Keep the outputs that drift most from FP32 in FP32, 1, 2, 4, ..., until a candidate passes.

        An output stays FP32 only if its writer *and* its readers do (an FP16 reader gets it through a
        Cast to FP16, which is where the drift is), so each step keeps those nodes; a node already kept
        for another cause (weights) may still need its readers."""
        ranking = drift_ranking(reference, first.twin, feeds, ctx.workdir)
        readers = readers_of(onnx.load(str(reference)))
        units = [(name, drop, [name, *readers.get(name, [])]) for name, drop in ranking]
        units = [unit for unit in units if not set(unit[2]) <= set(first.kept)]   # nothing left to keep
        notes["drift_ranking_top"] = [{"node": n, "sqnr_drop_db": round(d, 2) if math.isfinite(d) else "non-finite"}
                                      for n, d, _ in units[:8]]
        best, stale = first, 0
        for count in SEARCH_STEPS:
            if count > len(units) or stale >= STALE_STEPS:
                break        # more FP32 nodes stopped helping: the cause is not a few sensitive outputs
            extra: dict[str, str] = {}
            for rank, (name, drop, nodes) in enumerate(units[:count], 1):
                lost = f"{drop:.1f} dB SQNR lost relative to its inputs" if math.isfinite(drop) else "inf or NaN"
                extra.setdefault(name, f"metric: its output drifts most from FP32 when stored in FP16 (rank {rank}: "
                                       f"{lost})")
                for reader in nodes[1:]:
                    extra.setdefault(reader, f"metric: reads the output of {name} (rank {rank}), kept in FP32 so "
                                             "that output is not stored in FP16")
            found = judge({**extra, **first.kept})
            if found.evaluation.passed:
                return found
            stale = 0 if found.evaluation.rank > best.evaluation.rank else stale + 1
            best = max((best, found), key=lambda c: c.evaluation.rank)
        return best


def readers_of(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node name -> names of the nodes that read any of its outputs."""
    writer = {out: node.name for node in model.graph.node for out in node.output if out}
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in writer and node.name not in readers.setdefault(writer[name], []):
                readers[writer[name]].append(node.name)
    return readers


def _needs(model: ModelFile, ctx: PassContext) -> tuple[Family, dict[str, Path], list[Path], list[Path]]:
    family: Family | None = ctx.options.get("family")
    fp32: dict[str, Path] = ctx.options.get("fp32_models") or {}
    val = list(ctx.options.get("val_images") or [])
    calib = list(ctx.options.get("calib_images") or []) or val     # no --calib: ranges from the judging set
    if family is None or ctx.role not in fp32 or not val:
        raise ConversionError(f"fp16 {ctx.role}: needs a task family, the FP32 models and pictures to check it on "
                              "(give --calib or --val)")
    if model.format != "onnx":
        raise ConversionError(f"fp16 {ctx.role}: works on the ONNX reference, not {model.format}")
    return family, fp32, calib, val


def _largest(peaks: dict[str, float]) -> dict[str, Any]:
    name = max(peaks, key=peaks.get, default="")
    return {"tensor": name, "abs_max": round(peaks.get(name, 0.0), 4)}


def _kept_by(kept: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in kept.values():
        cause = why.split(":", 1)[0]
        counts[cause] = counts.get(cause, 0) + 1
    return counts


def _verdict(chosen: Candidate, started: float) -> dict[str, Any]:
    ev = chosen.evaluation
    return {"accepted": ev.passed, "metric": ev.metric, "value": round(ev.value, 6), "budget": ev.budget,
            "budget_is": "max" if ev.lower_is_better else "min", "samples": ev.samples,
            "extras": {k: round(v, 6) for k, v in ev.extras.items()}, "within_budget": ev.passed,
            "fp32_nodes": dict(chosen.kept), "kept_by": _kept_by(chosen.kept), "storage_twin": str(chosen.twin),
            "storage_twin_casts": chosen.casts, "seconds": round(time.perf_counter() - started, 1)}
