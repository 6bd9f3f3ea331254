"""TensorRT's explicit-quantization form of a calibrated INT8 model (Jetson): the settings, as data,
and the two graph steps around onnxruntime's quantizer.

A Jetson runs INT8 in TensorRT, which builds its engine from the Q/DQ pairs it finds (TensorRT
developer guide, "Explicit Quantization"; NVIDIA Model-Optimizer's ONNX INT8 path passes onnxruntime
the same options). The form, proven on every artifact by converters/checks/tensorrt_form.py:
- symmetric int8 activations and weights, every zero point 0 (TensorRT's only INT8 scheme);
- weights per channel on the output-channel axis: Conv [Cout, Cin/g, k..] axis 0, ConvTranspose
  [Cin, Cout/g, k..] axis 1; Gemm (axis 0 with transB, else 1) and MatMul (axis 1) are onnxruntime's
  defaults, both the output columns. (TensorRT 8.5 on JetPack 5 assumed axis 0 for ConvTranspose,
  NVIDIA/TensorRT#2380; Model-Optimizer uses axis 1, as here.)
- Q/DQ only on the activation inputs of the ops TensorRT fuses them into: Conv, ConvTranspose, Gemm,
  MatMul, and the residual input of an Add that follows a convolution (the Add becomes the conv's
  epilogue; its other input stays float). Outputs get none: TensorRT fuses the pointwise ops after a
  convolution (HardSwish, HardSigmoid, Relu, Clip, Mul) into it and requantizes at the next Q itself.
- biases stay float (TensorRT quantizes them itself); no QOperator ops.
The x86 rewrites (HardSwish as Add/Clip/Mul/Mul with its 1/6 folded into the next conv, Conv ->
HardSigmoid as Clip) are not made: they exist because onnxruntime's CPU has no integer HardSwish, and
here they would only split one fused epilogue into four ops. Channel groups are kept: TensorRT also
quantizes each activation with one per-tensor range, so narrow channels suffer the same way.

Judged here as written (onnxruntime CPU, graph optimisations off): onnxruntime's CPU optimiser would
first quantize the float biases to int32 (its WeightBiasQuantization transformer), which TensorRT does
not; measured on picodet_s_320_coco, that alone moved the outputs by 0.19 on average (box F1 vs FP32
0.97 with it, 0.94 as written).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..runners.onnx_unoptimized import OnnxUnoptimizedRunner
from .channel_groups import split_channel_groups
from .graph_rewrites import Graph, drop_dead, fuse_hardswish, opset_of, topological_sort
from .quant_layout import Plan, QuantLayout

SCHEME = "qdq-s8a-s8w"
CONV_OPS = ("Conv", "ConvTranspose")
FUSING_OPS = (*CONV_OPS, "Gemm", "MatMul")
RESIDUAL_OP = "Add"
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}       # output channels (Gemm, MatMul: onnxruntime's defaults)
EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True, "WeightSymmetric": True,      # int8, zero point 0
    "QuantizeBias": False,                                    # float biases
    "OpTypesToExcludeOutputQuantization": [*FUSING_OPS, RESIDUAL_OP],   # Q/DQ on inputs only
    "QDQOpTypePerChannelSupportToAxis": WEIGHT_AXIS,
}
HARDSWISH_OPSET = 14      # below it, HardSwish is written as x * HardSigmoid(x; 1/6, 1/2), which TensorRT fuses too


def prepare(src: Path, dst: Path, seeds: list[str] = (), peaks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The float graph TensorRT gets: `seeds` split into channel groups (which follow pieces through
    HardSwish, so hard-swish is fused first), and nothing else changed."""
    model = onnx.load(str(src))
    fuse_hardswish(model)
    topological_sort(model)
    counts: dict[str, Any] = {"channel_groups": split_channel_groups(model, peaks or {}, list(seeds))} if seeds else {}
    counts["hardswish_kept"] = sum(n.op_type == "HardSwish" for n in model.graph.node)
    if opset_of(model) < HARDSWISH_OPSET:
        hardswish_as_hardsigmoid(model)
    topological_sort(model)
    drop_dead(model)
    onnx.save(model, str(dst))
    return counts


def hardswish_as_hardsigmoid(model: onnx.ModelProto) -> int:
    """HardSwish(x) -> Mul(x, HardSigmoid(x; 1/6, 1/2)): the same function in ops of opset 13."""
    g, done = Graph(model), 0
    for node in list(g.g.node):
        if node.op_type == "HardSwish":
            x, y = node.input[0], node.output[0]
            g.g.node.extend([helper.make_node("HardSigmoid", [x], [f"{y}_gate"], name=f"{node.name}_gate",
                                              alpha=1 / 6, beta=0.5),
                             helper.make_node("Mul", [x, f"{y}_gate"], [y], name=f"{node.name}_mul")])
            g.drop(node)
            done += 1
    g.commit()
    return done


def plan(path: Path, exclude: list[str]) -> Plan:
    """Nodes to quantize and their int8 activation inputs: every fusing op with constant weights,
    and the residual input of Adds that follow a convolution; none of `exclude`."""
    g, skip = Graph(onnx.load(str(path))), set(exclude)
    order = {id(n): i for i, n in enumerate(g.g.node)}
    out: Plan = {}
    for node in g.g.node:
        if node.name in skip or not node.name:
            continue
        if node.op_type in FUSING_OPS and _computed(g, node.input[0]):
            weight = node.input[1] if len(node.input) > 1 else ""
            if node.op_type == "MatMul" and _computed(g, weight):
                out[node.name] = (0, 1)              # activation x activation (attention)
            elif weight in g.inits:
                out[node.name] = (0,)
        elif node.op_type == RESIDUAL_OP:
            slot = residual_slot(g, node, order)
            if slot is not None:
                out[node.name] = (slot,)
    return out


def _computed(g: Graph, name: str) -> bool:
    """An activation: a graph input or a node output that is not a constant."""
    producer = g.producer.get(name)
    return bool(name) and name not in g.inits and (producer is None or producer.op_type != "Constant")


def residual_slot(g: Graph, add: onnx.NodeProto, order: dict[int, int]) -> int | None:
    """The input of a residual Add that gets int8: the one that is not the output of the convolution
    TensorRT fuses the Add into (a conv whose output only this Add reads; of two, the later one)."""
    if len(add.input) != 2 or not all(_computed(g, i) for i in add.input):
        return None
    fused = [s for s in (0, 1) if g.producer.get(add.input[s]) is not None
             and g.producer[add.input[s]].op_type in CONV_OPS and g.private(add.input[s])]
    if not fused:
        return None
    main = max(fused, key=lambda s: order[id(g.producer[add.input[s]])])
    return 1 - main


def keep_float_elsewhere(path: Path, placed: Plan) -> int:
    """onnxruntime routes every reader of a quantized tensor through its DequantizeLinear; give every
    reader that `placed` does not name (float-fallback nodes, HardSwish, the fused side of an Add)
    the float tensor back, and drop the pairs nobody reads. Returns the inputs moved."""
    model = onnx.load(str(path))
    g, moved = Graph(model), 0
    for dq in [n for n in g.g.node if n.op_type == "DequantizeLinear"]:
        q = g.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue                          # a weight: its DequantizeLinear feeds only its op
        if dq.output[0] in g.outputs:
            _give_back_graph_output(model, g, q, dq)
        for reader in g.consumers.get(dq.output[0], []):
            for slot, name in enumerate(reader.input):
                if name == dq.output[0] and slot not in placed.get(reader.name, ()):
                    reader.input[slot] = q.input[0]
                    moved += 1
    drop_dead(model)
    used = {n.domain or "" for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in used]
    del model.opset_import[:]          # onnxruntime's quantizer declares domains (com.microsoft, ...) no node uses
    model.opset_import.extend(kept)
    onnx.save(model, str(path))
    return moved


def _give_back_graph_output(model: onnx.ModelProto, g: Graph, q: onnx.NodeProto, dq: onnx.NodeProto) -> None:
    """onnxruntime made a quantized graph output the DequantizeLinear's; the float producer gets it back."""
    name, renamed = dq.output[0], q.input[0]
    for node in model.graph.node:
        node.input[:] = [name if i == renamed else i for i in node.input]
        node.output[:] = [name if o == renamed else o for o in node.output]
    dq.output[0] = f"{name}_dq"
    for reader in g.consumers.get(name, []):
        reader.input[:] = [f"{name}_dq" if i == name else i for i in reader.input]
    g.consumers[f"{name}_dq"] = g.consumers.pop(name, [])


TENSORRT = QuantLayout("tensorrt explicit quantization", "QInt8", "QInt8", EXTRA_OPTIONS, prepare, plan,
                       keep_float_elsewhere, frozenset((*FUSING_OPS, RESIDUAL_OP)), OnnxUnoptimizedRunner)
