"""Repair what paddle2onnx 2.1.0 gets wrong, then prove the graph is valid ONNX.

Measured on PP-OCRv4 rec and ppocr cls: paddle2onnx writes `Concat` nodes over rank-0 (scalar)
tensors, which the ONNX spec forbids; onnx.checker's full check and onnxruntime both refuse the
file. A scalar concatenated along axis 0 means a 1-element vector, so each rank-0 input gets an
`Unsqueeze(axes=[0])` in front. The result is checked with onnx.checker (full) and loaded once in
onnxruntime; parity with Paddle is proven later by the validate pass.
"""
from __future__ import annotations

import onnx
from onnx import helper, numpy_helper
import numpy as np

from runtimes.errors import ConversionError

from .base import ModelFile, Pass, PassContext


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    ranks = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    for init in model.graph.initializer:
        ranks[init.name] = len(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    ranks[node.output[0]] = len(attr.t.dims)
    return ranks


def unsqueeze_scalar_concat_inputs(model: onnx.ModelProto) -> int:
    """Insert Unsqueeze before every rank-0 Concat input; returns how many were inserted."""
    ranks = _ranks(model)
    axes_name = "edge_repair_axes0"
    fixed, new_nodes = 0, []
    for node in model.graph.node:
        if node.op_type == "Concat":
            for i, name in enumerate(node.input):
                if ranks.get(name) == 0:
                    out = f"{name}_edge_unsq{fixed}"
                    new_nodes.append(helper.make_node("Unsqueeze", [name, axes_name], [out],
                                                      name=f"edge_repair_unsqueeze_{fixed}"))
                    node.input[i] = out
                    fixed += 1
        new_nodes.append(node)
    if fixed:
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes_name))
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return fixed


def drop_initializers_from_inputs(model: onnx.ModelProto) -> int:
    """Weights listed as graph inputs block constant folding (seen on PicoDet exports)."""
    names = {init.name for init in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return dropped


def drop_unused_initializers(model: onnx.ModelProto) -> int:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    dropped = len(model.graph.initializer) - len(keep)
    if dropped:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return dropped


def check_loadable(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # onnx raises several unrelated exception types
        raise ConversionError(f"{what}: not valid ONNX after repair: {str(err).splitlines()[0]}") from None
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ConversionError(f"{what}: onnxruntime refuses it after repair: {str(err).splitlines()[0]}") from None


class RepairPass(Pass):
    name = "repair"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        proto = onnx.load(str(model.path))
        unsqueezed = unsqueeze_scalar_concat_inputs(proto)
        dropped = drop_initializers_from_inputs(proto)
        unused = drop_unused_initializers(proto)
        check_loadable(proto, f"{ctx.role} model")
        out = ctx.workdir / f"{ctx.role}.repaired.onnx"
        onnx.save(proto, str(out))
        notes = {**model.notes, "repair": {"scalar_concat_inputs_unsqueezed": unsqueezed,
                                           "initializers_dropped_from_inputs": dropped,
                                           "unused_initializers_dropped": unused}}
        return ModelFile(out, "onnx", model.precision, notes)
