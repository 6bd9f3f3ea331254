"""Structural check: is an ONNX file in TensorRT's explicit-quantization form?

Nothing is executed; the graph is read. TensorRT builds an INT8 engine from Q/DQ ONNX only when
(TensorRT developer guide, "Explicit Quantization"; NVIDIA Model-Optimizer writes the same form):
- quantization is carried by QuantizeLinear/DequantizeLinear alone: QOperator ops (QLinearConv,
  ConvInteger, ...) are onnxruntime's CPU kernels, not TensorRT's;
- int8 is symmetric: every zero point is int8 and 0 (uint8 with a zero point of 128 is the CPU form);
- weights are per channel on the output-channel axis (Conv [Cout, Cin/g, k..] axis 0, ConvTranspose
  [Cin, Cout/g, k..] axis 1, Gemm B axis 0 with transB else 1, MatMul B its last axis), activations
  per tensor;
- biases stay float (TensorRT quantizes them itself; an int32 bias DequantizeLinear is the CPU form);
- a Q/DQ pair sits on an input TensorRT fuses it into: the activations of Conv, ConvTranspose, Gemm,
  MatMul and of residual Adds. Anywhere else it only adds a round trip.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXECUTED = "structural check of the graph (no execution)"
METRIC = "tensorrt_explicit_quantization form"
QDQ = {"QuantizeLinear", "DequantizeLinear"}
# op type -> the input slots that take an int8 activation (MatMul: both, when neither is a weight)
ACTIVATION_SLOTS = {"Conv": (0,), "ConvTranspose": (0,), "Gemm": (0,), "MatMul": (0, 1), "Add": (0, 1)}
WEIGHT_SLOT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
BIAS_SLOT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                 "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool", "QLinearSoftmax",
                 "QLinearGlobalAveragePool", "QLinearReduceMean", "QLinearWhere", "QLinearConvTranspose", "QGemm",
                 "QAttention", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
SHOWN = 12      # problems listed in a refusal; the record keeps them all


@dataclass
class FormReport:
    """The verdict: `problems` are written for a user, `counts` say what was verified."""
    problems: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        c = self.counts
        return (f"{c.get('qdq_pairs', 0)} activation Q/DQ pairs on {_ops_text(c.get('int8_inputs', {}))}; "
                f"{c.get('weights_per_channel', 0)}/{c.get('weights', 0)} weights per channel on the output-channel "
                f"axis; {c.get('zero_points', 0)} zero points, {c.get('zero_points_int8_zero', 0)} int8 and 0; "
                f"{c.get('quantized_biases', 0)} quantized biases; {c.get('qoperator_ops', 0)} QOperator ops; "
                f"{c.get('float_weighted_ops', 0)} weighted ops left in float")

    def describe(self) -> str:
        if self.passed:
            return f"in TensorRT's explicit-quantization form ({self.summary()})"
        more = f" (and {len(self.problems) - SHOWN} more)" if len(self.problems) > SHOWN else ""
        return f"not in TensorRT's explicit-quantization form: {'; '.join(self.problems[:SHOWN])}{more}"

    def record(self) -> dict[str, Any]:
        """A runtimes.bundle.ArtifactCheck as a dict."""
        return {"executed": EXECUTED, "metric": METRIC, "passed": self.passed, "details": {
                    "verified": self.summary(), **self.counts, "problems": list(self.problems)}}


def _ops_text(ops: dict[str, int]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(ops.items())) or "no op"


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in g.node:
            for slot, name in enumerate(n.input):
                self.consumers.setdefault(name, []).append((n, slot))
        self.outputs = {o.name for o in g.output}
        self.nodes = list(g.node)

    def value(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.consts:
            return numpy_helper.to_array(helper.get_attribute_value(self.consts[name].attribute[0]))
        return None

    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self.consts

    def weight_source(self, dq: onnx.NodeProto) -> str | None:
        """The constant a DequantizeLinear dequantizes: stored int8, or float through a Q (AddQDQPairToWeight)."""
        x = dq.input[0]
        if self.is_const(x):
            return x
        q = self.producer.get(x)
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" and self.is_const(q.input[0]) else None


def output_channel_axis(node: onnx.NodeProto, rank: int) -> int:
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return rank - 1
    return 0


def check_tensorrt_form(path: Path) -> FormReport:
    """Read `path` and report every way it departs from TensorRT's explicit-quantization form."""
    model = onnx.load(str(path))
    g, report = _Graph(model), FormReport()
    _check_qoperator(g, report)
    _check_zero_points(g, report)
    _check_placement(g, report)
    _check_weighted_ops(g, report)
    return report


def _check_qoperator(g: _Graph, report: FormReport) -> None:
    found = Counter(n.op_type for n in g.nodes if n.op_type in QOPERATOR_OPS or n.op_type.startswith("QLinear")
                    or n.op_type.endswith("Integer"))
    report.counts["qoperator_ops"] = sum(found.values())
    if found:
        report.problems.append(f"QOperator ops, which TensorRT does not take: {_ops_text(dict(found))}")


def _zero_point_type(g: _Graph, node: onnx.NodeProto) -> tuple[int | None, np.ndarray | None]:
    """(element type, value) of a Q/DQ node's zero point; absent: Q gives uint8, DQ follows its input."""
    if len(node.input) > 2 and node.input[2]:
        zp = g.value(node.input[2])
        if zp is None:
            return None, None
        return int(helper.np_dtype_to_tensor_dtype(zp.dtype)), zp
    if node.op_type == "QuantizeLinear":
        return TensorProto.UINT8, np.zeros(1, np.uint8)
    x = g.value(node.input[0])
    if x is not None:
        return int(helper.np_dtype_to_tensor_dtype(x.dtype)), np.zeros(1, x.dtype)
    q = g.producer.get(node.input[0])
    return _zero_point_type(g, q) if q is not None and q.op_type == "QuantizeLinear" else (None, None)


def _check_zero_points(g: _Graph, report: FormReport) -> None:
    total = good = 0
    for node in g.nodes:
        if node.op_type not in QDQ:
            continue
        total += 1
        kind, zp = _zero_point_type(g, node)
        if kind == TensorProto.INT32:
            continue     # a quantized bias: reported by _check_weighted_ops, with its op
        if kind is None:
            report.problems.append(f"{node.op_type} '{node.name}': zero point is not a constant")
        elif kind != TensorProto.INT8:
            report.problems.append(f"{node.op_type} '{node.name}': {TensorProto.DataType.Name(kind).lower()} zero "
                                   f"point{'' if not np.any(zp) else ' ' + str(int(np.ravel(zp)[0]))} (TensorRT "
                                   "takes int8 with zero point 0)")
        elif np.any(zp):
            report.problems.append(f"{node.op_type} '{node.name}': non-zero int8 zero point "
                                   f"{int(np.ravel(zp)[np.flatnonzero(zp)[0]])} (asymmetric)")
        else:
            good += 1
    report.counts.update(zero_points=total, zero_points_int8_zero=good)


def _check_placement(g: _Graph, report: FormReport) -> None:
    """Activation pairs: Q feeds only DQ, DQ only int8 activation slots, per-tensor scales."""
    pairs, inputs = 0, Counter()
    for node in g.nodes:
        if node.op_type == "QuantizeLinear":
            others = [c for c, _ in g.consumers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
            if others or node.output[0] in g.outputs:
                where = ", ".join(sorted({f"{c.op_type} '{c.name}'" for c in others})) or "a graph output"
                report.problems.append(f"QuantizeLinear '{node.name}' feeds {where}, not a DequantizeLinear")
            continue
        if node.op_type != "DequantizeLinear" or _zero_point_type(g, node)[0] == TensorProto.INT32:
            continue     # int32: a quantized bias, reported with its op by _check_weighted_ops
        if g.weight_source(node) is not None:
            _check_weight_consumers(g, node, report)
            continue
        pairs += 1
        scale = g.value(node.input[1])
        if scale is None or scale.size != 1:
            report.problems.append(f"DequantizeLinear '{node.name}': activation scale is not one per-tensor value")
        if node.output[0] in g.outputs:
            report.problems.append(f"DequantizeLinear '{node.name}' is a graph output")
        for consumer, slot in g.consumers.get(node.output[0], []):
            if slot in ACTIVATION_SLOTS.get(consumer.op_type, ()):
                inputs[consumer.op_type] += 1
            else:
                report.problems.append(f"Q/DQ pair '{node.name}' feeds {consumer.op_type} '{consumer.name}' "
                                       f"(input {slot}), where TensorRT does not fuse it")
    report.counts.update(qdq_pairs=pairs, int8_inputs=dict(inputs))


def _check_weight_consumers(g: _Graph, dq: onnx.NodeProto, report: FormReport) -> None:
    for consumer, slot in g.consumers.get(dq.output[0], []):
        if WEIGHT_SLOT.get(consumer.op_type) != slot:
            report.problems.append(f"quantized constant '{dq.name}' feeds {consumer.op_type} '{consumer.name}' "
                                   f"(input {slot}), which is not a weight TensorRT quantizes")


def _check_weighted_ops(g: _Graph, report: FormReport) -> None:
    weights = per_channel = biases = float_ops = 0
    for node in g.nodes:
        if node.op_type not in WEIGHT_SLOT:
            continue
        slot = WEIGHT_SLOT[node.op_type]
        b = BIAS_SLOT.get(node.op_type)
        bias = node.input[b] if b is not None and len(node.input) > b else ""
        bias_dq = g.producer.get(bias) if bias else None
        if bias_dq is not None and bias_dq.op_type == "DequantizeLinear":
            biases += 1
            report.problems.append(f"{node.op_type} '{node.name}': quantized bias (TensorRT takes a float bias)")
        dq = g.producer.get(node.input[slot]) if len(node.input) > slot else None
        activation = g.producer.get(node.input[0])
        quantized_in = activation is not None and activation.op_type == "DequantizeLinear"
        if dq is None or dq.op_type != "DequantizeLinear" or g.weight_source(dq) is None:
            if quantized_in and node.op_type != "MatMul":
                report.problems.append(f"{node.op_type} '{node.name}': int8 input but float weights")
            float_ops += not quantized_in and g.is_const(node.input[slot])
            continue
        weights += 1
        if not quantized_in:
            report.problems.append(f"{node.op_type} '{node.name}': int8 weights but a float input")
        problem = _per_channel_problem(g, node, dq)
        if problem:
            report.problems.append(f"{node.op_type} '{node.name}': weights {problem}")
        else:
            per_channel += 1
    report.counts.update(weights=weights, weights_per_channel=per_channel, quantized_biases=biases,
                         float_weighted_ops=float_ops)


def _per_channel_problem(g: _Graph, node: onnx.NodeProto, dq: onnx.NodeProto) -> str | None:
    weight, scale = g.value(g.weight_source(dq)), g.value(dq.input[1])
    if weight is None or scale is None:
        return "have no constant scale"
    want = output_channel_axis(node, weight.ndim)
    axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
    axis = axis + weight.ndim if axis < 0 else axis
    if scale.ndim != 1 or scale.size != weight.shape[want] or (scale.size > 1 and axis != want):
        return (f"are not per channel on the output-channel axis {want} (scale shape {list(scale.shape)}, axis "
                f"{axis}, weight shape {list(weight.shape)})")
    return None
