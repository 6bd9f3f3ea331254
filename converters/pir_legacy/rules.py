"""How each Paddle 3 PIR operation is written as a legacy (ProgramDesc) operator.

Pure data, no paddle import: `translate.py` walks a PIR program and applies these rules. A rule
names the legacy operator, maps PIR operands and results to legacy input/output slots by name,
renames attributes, and says which PIR operands are compile-time constants that the legacy
operator takes as attributes (PIR passes `reshape`'s shape or `scale`'s factor as a `full` /
`full_int_array` operand; legacy `reshape2` / `scale` take an attribute, or a tensor slot when the
value is computed at run time).

Only operations met in real PP-series exports are listed, and each conversion is checked against
the PIR program in Paddle Inference, so a wrong rule fails the check instead of shipping. An
operation not listed stops the translation with its name.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    legacy: str                                         # legacy operator type
    inputs: tuple[tuple[str, str], ...]                 # (PIR operand, legacy input slot)
    outputs: tuple[tuple[str, str], ...]                # (PIR result, legacy output slot); "" = legacy-only scratch
    attrs: tuple[tuple[str, str], ...] = ()             # (PIR attribute, legacy name) renames
    folded: tuple[tuple[str, str, str], ...] = ()       # (PIR operand, legacy attribute, slot when not constant)
    fixed: dict = field(default_factory=dict)           # legacy attributes PIR does not carry
    inplace: tuple[tuple[str, str], ...] = ()           # (PIR result, PIR operand) written in place in legacy


# PIR bookkeeping attributes with no legacy meaning
DROPPED_ATTRS = frozenset({"stop_gradient", "struct_name", "persistable", "op_callstack", "place",
                           "op_role", "op_namescope", "chunk_id", "comp_op_name", "op_dist_attr"})

X_OUT = (("x", "X"),), (("out", "Out"),)


def _unary(legacy: str, **fixed) -> Rule:
    return Rule(legacy, *X_OUT, fixed=fixed)


def _binary(legacy: str) -> Rule:
    # legacy elementwise ops broadcast numpy-style with axis -1, which is what PIR's ops do
    return Rule(legacy, (("x", "X"), ("y", "Y")), (("out", "Out"),), fixed={"axis": -1})


def _conv(legacy: str) -> Rule:
    return Rule(legacy, (("input", "Input"), ("filter", "Filter")), (("out", "Output"),))


def _interp(legacy: str) -> Rule:
    return Rule(legacy, (("x", "X"), ("out_size", "OutSize"), ("size_tensor", "SizeTensor"),
                         ("scale_tensor", "Scale")), (("output", "Out"),), attrs=(("data_format", "data_layout"),))


_BATCH_NORM = Rule(
    "batch_norm",
    (("x", "X"), ("mean", "Mean"), ("variance", "Variance"), ("scale", "Scale"), ("bias", "Bias")),
    (("out", "Y"), ("mean_out", "MeanOut"), ("variance_out", "VarianceOut"), ("saved_mean", "SavedMean"),
     ("saved_variance", "SavedVariance"), ("reserve_space", "ReserveSpace")),
    attrs=(("data_format", "data_layout"),),
    inplace=(("mean_out", "mean"), ("variance_out", "variance")))

RULES: dict[str, Rule] = {
    "pd_op.conv2d": _conv("conv2d"),
    "pd_op.depthwise_conv2d": _conv("depthwise_conv2d"),
    "pd_op.conv2d_transpose": Rule("conv2d_transpose", (("x", "Input"), ("filter", "Filter")),
                                   (("out", "Output"),), folded=(("output_size", "output_size", ""),)),
    "pd_op.batch_norm_": _BATCH_NORM,
    "pd_op.batch_norm": _BATCH_NORM,
    "pd_op.layer_norm": Rule("layer_norm", (("x", "X"), ("scale", "Scale"), ("bias", "Bias")),
                             (("out", "Y"), ("mean", "Mean"), ("variance", "Variance"))),
    "pd_op.pool2d": Rule("pool2d", *X_OUT, folded=(("kernel_size", "ksize", ""),)),
    "pd_op.relu": _unary("relu"),
    "pd_op.sigmoid": _unary("sigmoid"),
    "pd_op.swish": _unary("swish"),
    "pd_op.tanh": _unary("tanh"),
    "pd_op.hardswish": _unary("hard_swish", threshold=6.0, scale=6.0, offset=3.0),
    "pd_op.hardsigmoid": _unary("hard_sigmoid"),
    "pd_op.softmax": _unary("softmax"),
    "pd_op.assign": _unary("assign"),
    "pd_op.add": _binary("elementwise_add"),
    "pd_op.subtract": _binary("elementwise_sub"),
    "pd_op.multiply": _binary("elementwise_mul"),
    "pd_op.divide": _binary("elementwise_div"),
    "pd_op.maximum": _binary("elementwise_max"),
    "pd_op.minimum": _binary("elementwise_min"),
    "pd_op.matmul": Rule("matmul_v2", (("x", "X"), ("y", "Y")), (("out", "Out"),),
                         attrs=(("transpose_x", "trans_x"), ("transpose_y", "trans_y"))),
    "pd_op.scale": Rule("scale", *X_OUT, folded=(("scale", "scale", "ScaleTensor"),)),
    "pd_op.clip": Rule("clip", *X_OUT, folded=(("min", "min", "Min"), ("max", "max", "Max"))),
    "pd_op.concat": Rule("concat", *X_OUT, folded=(("axis", "axis", "AxisTensor"),)),
    "pd_op.split": Rule("split", *X_OUT, folded=(("sections", "sections", "SectionsTensorList"),
                                                 ("axis", "axis", "AxisTensor")), fixed={"num": 0}),
    "pd_op.split_with_num": Rule("split", *X_OUT, folded=(("axis", "axis", "AxisTensor"),),
                                 fixed={"sections": []}),
    # a shape given as a list of scalars goes to ShapeTensor, one computed tensor to Shape
    "pd_op.reshape": Rule("reshape2", (("x", "X"),), (("out", "Out"), ("", "XShape")),
                          folded=(("shape", "shape", "ShapeTensor|Shape"),)),
    "pd_op.transpose": Rule("transpose2", (("x", "X"),), (("out", "Out"), ("", "XShape")),
                            attrs=(("perm", "axis"),)),
    "pd_op.flatten": Rule("flatten_contiguous_range", (("x", "X"),), (("out", "Out"), ("", "XShape"))),
    "pd_op.squeeze": Rule("squeeze2", (("x", "X"),), (("out", "Out"), ("", "XShape")),
                          folded=(("axis", "axes", ""),)),
    "pd_op.unsqueeze": Rule("unsqueeze2", (("x", "X"),), (("out", "Out"), ("", "XShape")),
                            folded=(("axis", "axes", "AxesTensor"),)),
    "pd_op.slice": Rule("slice", (("input", "Input"),), (("out", "Out"),),
                        folded=(("starts", "starts", "StartsTensorList|StartsTensor"),
                                ("ends", "ends", "EndsTensorList|EndsTensor"))),
    "pd_op.shape": Rule("shape", (("input", "Input"),), (("out", "Out"),)),
    "pd_op.dropout": Rule("dropout", (("x", "X"), ("seed_tensor", "Seed")), (("out", "Out"), ("mask", "Mask")),
                          attrs=(("mode", "dropout_implementation"),), folded=(("p", "dropout_prob", ""),)),
    "pd_op.nearest_interp": _interp("nearest_interp_v2"),
    "pd_op.bilinear_interp": _interp("bilinear_interp_v2"),
}

# operations the walker handles itself: inputs, constants, lists, parameters and outputs
STRUCTURAL = frozenset({"builtin.parameter", "pd_op.data", "pd_op.feed", "pd_op.full", "pd_op.full_int_array",
                        "builtin.combine", "builtin.split", "pd_op.fetch"})


def untranslatable(op_names) -> list[str]:
    """The PIR operations of a program that this table cannot write as legacy operators."""
    return sorted({name for name in op_names if name not in RULES and name not in STRUCTURAL})
