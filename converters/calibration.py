"""Calibration for onnxruntime's static quantization: inputs, activation ranges, range caches.

onnxruntime's own Percentile/Entropy calibrators keep whole activation tensors in memory and need
every input to have the same shape (a det page does not), and its MinMax alone is too coarse for
PP-OCR rec (measured CER vs FP32: MinMax 4.5-6.8%, 99.999th percentile 1.1-1.4%). So ranges are
collected here in one pass: the FP32 graph is extended with, per float tensor, its min, max and its
k largest and k smallest values (TopK inside onnxruntime, so nothing big leaves the session). The
percentile of the values of *all* inputs pooled together is then exact: the global top-K values
are among each input's top-K. (Averaging per-input percentiles instead collapsed the det output
range when most pictures hold no text: box F1 0.03; the largest per-input percentile left rec at
CER 5.9%.) Ranges are written in onnxruntime's calibration-cache format, and quantize_static reads
them instead of calibrating again; every candidate (different float nodes) reuses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from runtimes.errors import ConversionError

from .latency import session

Feeds = dict[str, np.ndarray]
# range method -> share of values allowed outside the range (None: the extremes). Both tails are
# candidates because neither wins everywhere: PP-OCRv4 rec, CER vs FP32 calibrated on half the text
# pictures and judged on the other half: 1e-5 1.64% / 1.24%, 1e-4 1.64% / 0.84% (1e-3: 22-30%).
RANGE_METHODS = {"minmax": None, "p99.999": 1e-5, "p99.99": 1e-4}
KEPT_TAIL = max(t for t in RANGE_METHODS.values() if t)    # what collect_stats keeps of each tensor


class FeedListReader(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader over an in-memory list of feed dicts (re-readable)."""

    def __init__(self, feeds: list[Feeds]):
        self.feeds = list(feeds)
        self.rewind()

    def get_next(self) -> Feeds | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Used by onnxruntime's strided MinMax calibration (CalibStridedMinMax)."""
        self._iter = iter(self.feeds[start_index:end_index])


@dataclass
class TensorStats:
    """One tensor over all calibration inputs: extremes, and the largest/smallest values of each input
    (enough of them for ranges with up to `tail` of all values outside)."""
    tail: float = KEPT_TAIL
    size: int = 0                                        # values seen over all inputs
    mins: list[float] = field(default_factory=list)
    maxs: list[float] = field(default_factory=list)
    tops: list[np.ndarray] = field(default_factory=list)
    bottoms: list[np.ndarray] = field(default_factory=list)

    def range(self, method: str) -> tuple[float, float]:
        if method not in RANGE_METHODS:
            raise ConversionError(f"unknown calibration range method '{method}' (known: {', '.join(RANGE_METHODS)})")
        tail = RANGE_METHODS[method]
        if tail is None:
            return min(self.mins), max(self.maxs)
        if tail > self.tail:
            raise ConversionError(f"calibration range '{method}' needs a tail of {tail:g}; only {self.tail:g} was kept")
        # The k-th largest (smallest) of all inputs' values pooled, k = ceil(tail * all values).
        k = max(1, math.ceil(tail * self.size))
        tops, bottoms = np.concatenate(self.tops), np.concatenate(self.bottoms)
        high = np.partition(tops, tops.size - min(k, tops.size))[tops.size - min(k, tops.size)]
        low = np.partition(bottoms, min(k, bottoms.size) - 1)[min(k, bottoms.size) - 1]
        return float(low), float(high)


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the float32 activations (graph inputs and node outputs), in graph order."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    weights = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in weights]
    names += [o for n in model.graph.node for o in n.output if o]
    return [n for n in names if types.get(n) == TensorProto.FLOAT]


def _const(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def add_range_outputs(model: onnx.ModelProto, tensors: list[str], keep: float) -> list[tuple[str, list[str]]]:
    """Append, per tensor, its size, min, max and its k largest and k smallest values as graph outputs.

    k = min(size, ceil(size * keep)): `keep` is the tail share times the number of inputs, so each
    input keeps as many values as the pooled tail can hold when all inputs are the same size.
    """
    # k is worked out in double: Min/Max take no integers before opset 12 (PicoDet and HumanSeg ONNX
    # exports are opset 11), and a double holds every tensor size exactly.
    flat = _const(model, "edge_cal_flat", np.array([-1], np.int64))
    one = _const(model, "edge_cal_one", np.array([1], np.int64))
    one_d = _const(model, "edge_cal_one_d", np.array([1.0], np.float64))
    keep_c = _const(model, "edge_cal_keep", np.array(keep, np.float64))
    nodes, wanted = [], []
    for i, name in enumerate(tensors):
        p = f"edge_cal{i}"
        outs = [f"{p}_n", f"{p}_min", f"{p}_max", f"{p}_top", f"{p}_bot"]
        nodes += [
            helper.make_node("Reshape", [name, flat], [f"{p}_flat"]),
            helper.make_node("ReduceMin", [f"{p}_flat"], [outs[1]], keepdims=0),
            helper.make_node("ReduceMax", [f"{p}_flat"], [outs[2]], keepdims=0),
            helper.make_node("Size", [name], [outs[0]]),
            helper.make_node("Cast", [outs[0]], [f"{p}_nf"], to=TensorProto.DOUBLE),
            helper.make_node("Mul", [f"{p}_nf", keep_c], [f"{p}_kf"]),
            helper.make_node("Ceil", [f"{p}_kf"], [f"{p}_kc"]),
            helper.make_node("Min", [f"{p}_kc", f"{p}_nf"], [f"{p}_kn"]),
            helper.make_node("Max", [f"{p}_kn", one_d], [f"{p}_kd"]),
            helper.make_node("Cast", [f"{p}_kd"], [f"{p}_ki"], to=TensorProto.INT64),
            helper.make_node("Reshape", [f"{p}_ki", one], [f"{p}_k"]),
            helper.make_node("TopK", [f"{p}_flat", f"{p}_k"], [outs[3], f"{p}_topi"], largest=1),
            helper.make_node("TopK", [f"{p}_flat", f"{p}_k"], [outs[4], f"{p}_boti"], largest=0),
        ]
        wanted.append((name, outs))
    model.graph.node.extend(nodes)
    for _, outs in wanted:
        model.graph.output.extend([helper.make_tensor_value_info(outs[0], TensorProto.INT64, []),
                                   helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, []),
                                   helper.make_tensor_value_info(outs[2], TensorProto.FLOAT, []),
                                   helper.make_tensor_value_info(outs[3], TensorProto.FLOAT, [None]),
                                   helper.make_tensor_value_info(outs[4], TensorProto.FLOAT, [None])])
    return wanted


def collect_stats(model_path: Path, feeds: list[Feeds], workdir: Path, tail: float = KEPT_TAIL,
                  threads: int = 0, known: dict[str, TensorStats] | None = None) -> dict[str, TensorStats]:
    """Run the FP32 model on `feeds` once and keep every float tensor's range statistics.

    `known`: statistics of a float-equivalent graph on the same feeds (e.g. before a channel-group
    split). A tensor of the same name whose per-input extremes are the same is taken from it, and
    only the others get the TopK outputs, which are what costs: PP-OCRv4 rec, 16 inputs, all
    tensors 31 s against 2.4 s for plain runs. (Same name is not enough: a rewrite may give a name
    other values, e.g. a hard-swish output before and after its 1/6 moved into the next conv.)"""
    if not feeds:
        raise ConversionError(f"calibration of {model_path.name}: no calibration inputs were made "
                              "(no images, or nothing detected on them)")
    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    known = {name: rec for name, rec in (known or {}).items() if rec.tail >= tail and name in tensors}
    reused = _unchanged(model, feeds, known, workdir / f"{model_path.stem}.extremes.onnx", threads) if known else {}
    measure = [t for t in tensors if t not in reused]
    if not measure:
        return reused
    # 2x margin: inputs smaller than the largest one still keep every value of the pooled tail
    wanted = add_range_outputs(model, measure, min(1.0, tail * len(feeds) * 2))
    stats = {name: TensorStats(tail) for name, _ in wanted}
    names = [o for _, outs in wanted for o in outs]
    for values in _runs(model, feeds, names, workdir / f"{model_path.stem}.calibration.onnx", threads):
        for name, (size, mn, mx, top, bottom) in wanted:
            rec = stats[name]
            rec.size += int(values[size])
            rec.mins.append(float(values[mn]))
            rec.maxs.append(float(values[mx]))
            rec.tops.append(values[top])
            rec.bottoms.append(values[bottom])
    return {**reused, **stats}


def _runs(model: onnx.ModelProto, feeds: list[Feeds], names: list[str], path: Path, threads: int):
    """The augmented `model` run on every feed: one dict of the `names` outputs per feed."""
    onnx.save(model, str(path))
    try:
        sess = session(path, threads)
        for feed in feeds:
            yield dict(zip(names, sess.run(names, feed)))
    finally:
        path.unlink(missing_ok=True)


def _unchanged(model: onnx.ModelProto, feeds: list[Feeds], known: dict[str, TensorStats], path: Path,
               threads: int) -> dict[str, TensorStats]:
    """The `known` tensors whose min and max on every feed are what was recorded (one cheap run each)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = []
    for i, name in enumerate(known):       # no axes: over all of the tensor, without a reshaped copy
        outs = [f"edge_ext{i}_min", f"edge_ext{i}_max"]
        probe.graph.node.extend([helper.make_node("ReduceMin", [name], [outs[0]], keepdims=0),
                                 helper.make_node("ReduceMax", [name], [outs[1]], keepdims=0)])
        probe.graph.output.extend([helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outs])
        outputs.append((name, outs))
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in known}
    for values in _runs(probe, feeds, [o for _, outs in outputs for o in outs], path, threads):
        for name, (mn, mx) in outputs:
            seen[name].append((float(values[mn]), float(values[mx])))
    return {name: rec for name, rec in known.items()
            if np.allclose(seen[name], list(zip(rec.mins, rec.maxs)), rtol=1e-4, atol=1e-6)}


def write_range_cache(stats: dict[str, TensorStats], method: str, path: Path) -> Path:
    """Ranges in onnxruntime's calibration-cache format (quantize_static's calibration_cache_path)."""
    data = {}
    for name, rec in stats.items():
        lo, hi = rec.range(method)
        data[name] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
    if path.exists():
        path.unlink()
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return path
