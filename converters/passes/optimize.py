"""Graph optimisation of the FP32 ONNX model that keeps its outputs equal.

Measured on paddle2onnx 2.1.0 PP-OCRv4 graphs: onnxruntime's offline *basic* optimisation
(constant folding, Identity removal, Conv+BN/Add fusion; it writes only standard ONNX ops) leaves
most of the float side-work in place, because PP-LCNetV3's "learnable affine blocks" are written
Mul(scalar, x) -> Add(x, scalar), which onnxruntime's Conv+Mul fusion does not match; they follow
every conv and every hard-swish (det after basic: 86 Mul and 65 Add beside 62 Conv). Folding them
into the convolutions (exact algebra) makes FP32 itself 0.70x (det) and 0.59x (rec) of the export's
latency at 1 thread, and leaves the INT8 graph fewer float islands.

Fusions that need a newer opset (HardSwish 14, LayerNormalization 17) run only when the profile's
opset allows: at opset 13 onnxruntime fuses those patterns itself when it loads the model
(measured: same FP32 latency at opset 13 and 17; rec INT8 CER 1.3% vs 1.4%), and TensorRT of older
JetPacks does not parse LayerNormalization. The pass runs the original and the optimised graph on
the same inputs and falls back to the basic graph if outputs drift.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from runtimes.errors import ConversionError

from ..latency import session
from .base import ModelFile, Pass, PassContext
from .graph_rewrites import apply_fusions, opset_of

# max |Δ| / max(1, |out|): folding reorders float maths; measured det 1.4e-5, rec 1.6e-4 (softmax output)
PARITY_RTOL = 1e-3


def ort_basic_optimize(src: Path, dst: Path) -> None:
    """onnxruntime offline optimisation at the hardware-independent *basic* level (standard ops only)."""
    import onnxruntime as ort
    ort.set_default_logger_severity(3)   # it warns about every unused initializer it drops
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises untyped errors
        raise ConversionError(f"optimize: onnxruntime cannot load {src.name}: {str(err).splitlines()[0]}") \
            from None


def synthetic_feeds(path: Path, count: int = 2) -> list[dict[str, np.ndarray]]:
    """Deterministic inputs when no real ones are given: dynamic dims become 1 (batch) or 64."""
    sess = session(path, 0)
    rng = np.random.default_rng(0)
    return [{i.name: rng.standard_normal([d if isinstance(d, int) else (1 if k == 0 else 64)
                                          for k, d in enumerate(i.shape)]).astype(np.float32)
             for i in sess.get_inputs()} for _ in range(count)]


def output_drift(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """Largest |a - b| / max(1, |a|max) over all outputs and feeds (probabilities: absolute error)."""
    ref, cand = session(reference, 0), session(candidate, 0)
    worst = 0.0
    for feed in feeds:
        for a, b in zip(ref.run(None, feed), cand.run(None, feed)):
            if a.shape != b.shape:
                return float("inf")
            scale = max(1.0, float(np.max(np.abs(a))))
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))) / scale)
    return worst


def parity_feeds(path: Path, ctx: PassContext) -> tuple[list[dict[str, np.ndarray]], str]:
    """Real inputs from the task family when the pipeline gave one, else synthetic ones."""
    family, fp32 = ctx.options.get("family"), ctx.options.get("fp32_models")
    images = ctx.options.get("val_images") or ctx.options.get("calib_images")
    if family is not None and images and fp32:
        feeds = family.calibration_feeds(ctx.role, fp32, list(images), limit=4)
        if feeds:
            return feeds, f"{len(feeds)} real inputs"
    return synthetic_feeds(path), "2 synthetic inputs"


class OptimizePass(Pass):
    """onnxruntime basic optimisation + exact fusions, proven equal on real or synthetic inputs."""

    name = "optimize"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        basic = ctx.workdir / f"{ctx.role}.basic.onnx"
        ort_basic_optimize(model.path, basic)
        proto = onnx.load(str(basic))
        basic_nodes = len(proto.graph.node)
        max_opset = int(ctx.options.get("max_opset", ctx.target.opset))
        counts = apply_fusions(proto, max_opset)
        out = ctx.workdir / f"{ctx.role}.opt.onnx"
        onnx.save(proto, str(out))
        feeds, what = parity_feeds(model.path, ctx)
        drift = output_drift(model.path, out, feeds)
        notes: dict[str, Any] = {"nodes_before": len(onnx.load(str(model.path)).graph.node),
                                 "nodes_basic": basic_nodes, "nodes": len(proto.graph.node),
                                 "fusions": counts, "opset": opset_of(proto), "parity_inputs": what,
                                 "max_rel_drift": drift}
        if not drift <= PARITY_RTOL:
            # A fusion changed the function: keep onnxruntime's basic graph, which must be exact.
            notes["fallback"] = f"fused graph drifted {drift:.2e} > {PARITY_RTOL:g}; kept the basic graph"
            out, basic_drift = basic, output_drift(model.path, basic, feeds)
            notes["max_rel_drift"] = basic_drift
            if not basic_drift <= PARITY_RTOL:
                raise ConversionError(f"optimize: {ctx.role} model outputs change by {basic_drift:.1e} under "
                                      "onnxruntime's basic optimisation; refusing to continue")
        ctx.progress(f"optimize {ctx.role}: {notes['nodes_before']} -> {len(proto.graph.node)} nodes, "
                     f"max relative drift {notes['max_rel_drift']:.1e}")
        return ModelFile(out, "onnx", model.precision, {**model.notes, "optimize": notes})
