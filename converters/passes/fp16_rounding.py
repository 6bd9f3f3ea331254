"""FP32 ONNX -> the same graph with every weight and every float tensor rounded to FP16 (arithmetic stays FP32).

Why: an FP16 `.nb` for a Cortex-A76 computes in FP16, and nothing on this x86 host executes FP16
arithmetic for these models: Paddle Lite's x86 build has no FP16 kernels (with `--enable_fp16`, opt
still names only float kernels in an x86 `.nb`), and onnxruntime's CPU provider runs an FP16 ONNX
model's Conv/Gemm as FP32 kernels behind inserted Casts, keeping activations in FP32 (seen in its
profile with onnxruntime 1.32). So this pass makes what can be executed honestly: FP16 *storage*
everywhere, each weight and each operator's float output rounded to the nearest FP16 (Cast to
float16 and back, overflow to inf included), with each operator computing in FP32 in between. It is
named so in the manifest: it estimates the effect of FP16 rounding, not the ARM FP16 kernels' own
arithmetic (how they multiply and accumulate). It rounds every tensor, also those of operators the
ARM file keeps in FP32 (opt leaves e.g. PicoDet's clip ops in float).

The rounded copy runs with onnxruntime's graph optimisations off (converters/builders/paddle_lite_fp.py),
so that no optimiser folds a Cast pair away.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtimes.errors import ConversionError

from .base import ModelFile, Pass, PassContext


def _round_tensor(tensor: TensorProto) -> TensorProto:
    values = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
    return numpy_helper.from_array(values, tensor.name)


def _float_values(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {vi.name for vi in infos if vi.type.tensor_type.elem_type == TensorProto.FLOAT}


def _rounding_pair(source: str, target: str) -> list[onnx.NodeProto]:
    half = f"{target}__fp16"
    return [helper.make_node("Cast", [source], [half], name=f"{half}_cast", to=TensorProto.FLOAT16),
            helper.make_node("Cast", [half], [target], name=f"{target}__fp32_cast", to=TensorProto.FLOAT)]


def round_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ConversionError("FP16 rounding: the graph has sub-graphs (If/Loop), which this pass does not rewrite")
    floats = _float_values(model)
    weights = [i for i in graph.initializer if i.data_type == TensorProto.FLOAT]
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(_round_tensor(init))
    nodes: list[onnx.NodeProto] = []
    renamed = {}
    for graph_input in graph.input:                 # the picture itself, as the device's FP16 input layer sees it
        if graph_input.name in floats:
            renamed[graph_input.name] = f"{graph_input.name}__r16"
            nodes += _rounding_pair(graph_input.name, renamed[graph_input.name])
    rounded, unknown = 0, 0
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(_round_tensor(attr.t))
            nodes.append(node)
            continue
        pairs = []
        for slot, name in enumerate(node.output):
            if name and name in floats:
                node.output[slot] = f"{name}__fp32"
                pairs += _rounding_pair(node.output[slot], name)
                rounded += 1
            elif name:
                unknown += 1
        nodes += [node, *pairs]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model, {"weights_rounded": len(weights), "tensors_rounded": rounded,
                   "outputs_not_float_or_untyped": unknown}


class Fp16RoundingPass(Pass):
    name = "fp16_rounding"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if model.format != "onnx":
            raise ConversionError(f"{ctx.role} model: FP16 rounding works on the ONNX reference, not {model.format}")
        rounded, report = round_to_fp16(onnx.load(str(model.path)))
        out = ctx.workdir / f"{ctx.role}.fp16_rounded.onnx"
        onnx.save(rounded, str(out))
        return ModelFile(out, "onnx", "fp32", {**model.notes, "fp16_rounding": report})
