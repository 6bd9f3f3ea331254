"""Exact ONNX graph rewrites the optimize and quantize passes share.

An index over a graph (`Graph`) and folds/fusions whose algebra is exact: affine Mul/Add and
BatchNorm folded into convolutions, decomposed hard-swish and LayerNorm fused into one op where the
opset allows, dead-node removal and a topological sort. Each returns how many places it changed;
the passes prove outputs unchanged on real inputs before keeping a rewrite.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtimes.errors import ConversionError

HSIG_ALPHA, HSIG_BETA = 1 / 6, 0.5
OPSET_UNSAFE_OPS = {"RoiAlign"}   # default attributes changed between opset 13 and 17


class Graph:
    """Index over a GraphProto: producers, consumers, constants, and small rewrite helpers."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.g = model, model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.removed: set[int] = set()
        self.fresh = 0

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def add_const(self, base: str, value: np.ndarray) -> str:
        self.fresh += 1
        name = f"{base}_opt{self.fresh}"
        while name in self.inits:
            self.fresh += 1
            name = f"{base}_opt{self.fresh}"
        tensor = numpy_helper.from_array(value.astype(np.float32), name)
        self.g.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def private(self, tensor: str, allowed: int = 1) -> bool:
        return len(self.consumers.get(tensor, [])) == allowed and tensor not in self.outputs

    def drop(self, *nodes: onnx.NodeProto) -> None:
        self.removed.update(id(n) for n in nodes)

    def commit(self) -> None:
        keep = [n for n in self.g.node if id(n) not in self.removed]
        del self.g.node[:]
        self.g.node.extend(keep)


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def other_input(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def channel_vector(value: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """A constant broadcast along axis 1 of a rank-`rank` tensor -> (channels,) vector, else None."""
    if value is None or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, float(value.ravel()[0]), np.float64)
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape == (1, channels) + (1,) * (rank - 2):
        return value.reshape(channels).astype(np.float64)
    return None


def conv_weights(g: Graph, conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    w = g.const(conv.input[1])
    if w is None:
        return None
    cout = w.shape[0] if conv.op_type == "Conv" else w.shape[1] * attr(conv, "group", 1)
    b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(cout, np.float32)
    return (w.astype(np.float64), b.astype(np.float64)) if b is not None else None


def out_channel_view(w: np.ndarray, conv: onnx.NodeProto) -> np.ndarray:
    """Weights as (out_channels, ...) so a per-output-channel factor broadcasts on axis 0."""
    if conv.op_type == "Conv":
        return w
    group = attr(conv, "group", 1)   # ConvTranspose: (Cin, Cout/group, k...)
    cin, cout_g = w.shape[:2]
    per = w.reshape(group, cin // group, cout_g, *w.shape[2:]).swapaxes(1, 2)
    return per.reshape(group * cout_g, cin // group, *w.shape[2:])


def from_out_channel_view(v: np.ndarray, conv: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if conv.op_type == "Conv":
        return v
    group = attr(conv, "group", 1)
    cout_g = shape[1]
    per = v.reshape(group, cout_g, shape[0] // group, *shape[2:]).swapaxes(1, 2)
    return per.reshape(shape)


def set_conv_params(g: Graph, conv: onnx.NodeProto, w: np.ndarray, b: np.ndarray) -> None:
    conv.input[1] = g.add_const(conv.input[1], w)
    if len(conv.input) > 2:
        conv.input[2] = g.add_const(conv.input[2] or conv.name + "_bias", b)
    else:
        conv.input.append(g.add_const(conv.name + "_bias", b))


def fold_into_conv_outputs(model: onnx.ModelProto) -> int:
    """Conv/ConvTranspose -> Mul(c) | Add(c) | BatchNormalization  ==>  one conv with new W, B."""
    g, done = Graph(model), 0
    for conv in list(g.g.node):
        if conv.op_type not in ("Conv", "ConvTranspose") or id(conv) in g.removed:
            continue
        nxt = g.only_consumer(conv.output[0])
        params = conv_weights(g, conv)
        if nxt is None or params is None or id(nxt) in g.removed:
            continue
        w, b = params
        wv, cout, rank = out_channel_view(w, conv), b.shape[0], w.ndim
        if nxt.op_type in ("Mul", "Add"):
            vec = channel_vector(g.const(other_input(nxt, conv.output[0])), cout, rank)
            if vec is None:
                continue
            scale, shift = (vec, np.zeros(cout)) if nxt.op_type == "Mul" else (np.ones(cout), vec)
        elif nxt.op_type == "BatchNormalization" and len(nxt.output) == 1:
            gamma, beta, mean, var = (g.const(n) for n in nxt.input[1:5])
            if any(v is None for v in (gamma, beta, mean, var)):
                continue
            scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + attr(nxt, "epsilon", 1e-5))
            shift = beta - mean * scale
        else:
            continue
        wv = wv * scale.reshape(-1, *([1] * (rank - 1)))
        set_conv_params(g, conv, from_out_channel_view(wv, conv, w.shape), b * scale + shift)
        conv.output[0] = nxt.output[0]
        g.drop(nxt)
        done += 1
    g.commit()
    return done


def fold_affine_into_next_conv(model: onnx.ModelProto) -> int:
    """y = x*s (+ t) feeding only Convs  ==>  Conv(W*s) with bias += W·t.

    The shift t is exact only without zero padding (a padded border would see t, not 0), so with
    padding the Mul is folded and the Add is kept as x + t/s in front of the conv.
    """
    g, done = Graph(model), 0
    for mul in list(g.g.node):
        if mul.op_type != "Mul" or id(mul) in g.removed:
            continue
        consts = [i for i in mul.input if i in g.inits]
        if len(consts) != 1:
            continue
        x = other_input(mul, consts[0])
        add = g.only_consumer(mul.output[0])
        if add is not None and not (add.op_type == "Add" and other_input(add, mul.output[0]) in g.inits):
            add = None
        tail = add.output[0] if add is not None else mul.output[0]
        convs = g.consumers.get(tail, [])
        if (tail in g.outputs or not convs or not g.private(mul.output[0])
                or any(c.op_type != "Conv" or c.input[0] != tail or conv_weights(g, c) is None for c in convs)):
            continue
        w0 = g.const(convs[0].input[1])
        cin = w0.shape[1] * attr(convs[0], "group", 1)
        s = channel_vector(g.const(consts[0]), cin, w0.ndim)
        t = channel_vector(g.const(other_input(add, mul.output[0])), cin, w0.ndim) if add else np.zeros(cin)
        if s is None or t is None or np.any(s == 0):
            continue
        padded = any(any(attr(c, "pads", [0])) or attr(c, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
                     for c in convs)
        for conv in convs:
            w, b = conv_weights(g, conv)
            group, (cout, cin_g) = attr(conv, "group", 1), w.shape[:2]
            chan = (np.arange(cout)[:, None] // (cout // group)) * cin_g + np.arange(cin_g)[None, :]
            w_new = w * s[chan].reshape(cout, cin_g, *([1] * (w.ndim - 2)))
            b_new = b if padded else b + (w.reshape(cout, cin_g, -1).sum(-1) * t[chan]).sum(1)
            set_conv_params(g, conv, w_new, b_new)
            conv.input[0] = x
        if padded and add is not None and np.any(t != 0):
            shift = g.add_const("affine_shift", (t / s).reshape(-1, *([1] * (w0.ndim - 2))))
            keep = helper.make_node("Add", [x, shift], [tail], name=add.name)
            g.g.node.append(keep)
            for conv in convs:
                conv.input[0] = tail
        g.drop(*([mul] + ([add] if add is not None else [])))
        done += 1
    g.commit()
    return done


def fuse_hardswish(model: onnx.ModelProto) -> int:
    """Mul(x, HardSigmoid(x; 1/6, 1/2)) and x * Clip(x+3, 0, 6) / 6  ==>  HardSwish(x) (opset 14)."""
    g, done = Graph(model), 0
    for mul in list(g.g.node):
        if mul.op_type != "Mul" or id(mul) in g.removed:
            continue
        for gate_name in mul.input:
            gate, x = g.producer.get(gate_name), other_input(mul, gate_name)
            if (gate is not None and gate.op_type == "HardSigmoid" and gate.input[0] == x and g.private(gate_name)
                    and abs(attr(gate, "alpha", 0.2) - HSIG_ALPHA) < 1e-6
                    and abs(attr(gate, "beta", 0.5) - HSIG_BETA) < 1e-6):
                g.g.node.append(helper.make_node("HardSwish", [x], [mul.output[0]], name=mul.output[0] + "_hardswish"))
                g.drop(mul, gate)
                done += 1
                break
    done += _fuse_clip_hardswish(g)
    g.commit()
    return done


def _scalar(g: Graph, name: str) -> float | None:
    value = g.const(name)
    return float(value.ravel()[0]) if value is not None and value.size == 1 else None


def _fuse_clip_hardswish(g: Graph) -> int:
    done = 0
    for div in list(g.g.node):
        if div.op_type != "Div" or id(div) in g.removed or _scalar(g, div.input[1]) != 6.0:
            continue
        mul = g.producer.get(div.input[0])
        if mul is None or mul.op_type != "Mul" or not g.private(mul.output[0]):
            continue
        for clip_name in mul.input:
            clip, x = g.producer.get(clip_name), other_input(mul, clip_name)
            add = g.producer.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else None
            if (add is None or add.op_type != "Add" or x not in add.input or not g.private(clip_name)
                    or not g.private(add.output[0]) or len(clip.input) < 3
                    or _scalar(g, other_input(add, x)) != 3.0 or _scalar(g, clip.input[1]) != 0.0
                    or _scalar(g, clip.input[2]) != 6.0):
                continue
            g.g.node.append(helper.make_node("HardSwish", [x], [div.output[0]], name=div.output[0] + "_hardswish"))
            g.drop(div, mul, clip, add)
            done += 1
            break
    return done


def fuse_layernorm(model: onnx.ModelProto) -> int:
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul/Add) over the last axis ==> LayerNormalization (17)."""
    g, done = Graph(model), 0
    chain = ("Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div")
    for mean in list(g.g.node):
        if mean.op_type != "ReduceMean" or attr(mean, "axes") != [-1] or id(mean) in g.removed:
            continue
        x, nodes = mean.input[0], [mean]
        sub = g.only_consumer(mean.output[0])
        if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean.output[0]]:
            continue
        users = g.consumers.get(sub.output[0], [])
        pow_ = next((u for u in users if u.op_type == "Pow"), None)
        div = next((u for u in users if u.op_type == "Div"), None)
        if len(users) != 2 or pow_ is None or div is None or _scalar(g, pow_.input[1]) != 2.0:
            continue
        var = g.only_consumer(pow_.output[0])
        add = var and g.only_consumer(var.output[0])
        sqrt = add and g.only_consumer(add.output[0])
        if not (var and add and sqrt) or [n.op_type for n in (sub, pow_, var, add, sqrt, div)] != list(chain) \
                or attr(var, "axes") != [-1] or sqrt.output[0] != div.input[1] or not g.private(sqrt.output[0]):
            continue
        eps = _scalar(g, other_input(add, var.output[0]))
        # The affine tail gives the normalised width; without it the width is unknown here.
        mul = g.only_consumer(div.output[0])
        gamma = g.const(other_input(mul, div.output[0])) if mul is not None and mul.op_type == "Mul" else None
        if eps is None or gamma is None or gamma.ndim != 1:
            continue
        nodes += [sub, pow_, var, add, sqrt, div, mul]
        tail, beta = mul.output[0], np.zeros(gamma.shape)
        bias = g.only_consumer(tail)
        if bias is not None and bias.op_type == "Add" and g.const(other_input(bias, tail)) is not None \
                and g.const(other_input(bias, tail)).shape == gamma.shape:
            beta, tail = g.const(other_input(bias, tail)), bias.output[0]
            nodes.append(bias)
        ln = helper.make_node("LayerNormalization", [x, g.add_const("ln_scale", gamma), g.add_const("ln_bias", beta)],
                              [tail], name=mean.name + "_layernorm", axis=-1, epsilon=eps)
        g.g.node.append(ln)
        g.drop(*nodes)
        done += 1
    g.commit()
    return done


# name -> (fusion, opset it needs). Order matters: fold affines into convs before matching hard-swish.
FUSIONS: dict[str, tuple[Callable[[onnx.ModelProto], int], int]] = {
    "conv_output_fold": (fold_into_conv_outputs, 13),
    "affine_into_next_conv": (fold_affine_into_next_conv, 13),
    "hardswish": (fuse_hardswish, 14),
    "layernorm": (fuse_layernorm, 17),
}


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def set_min_opset(model: onnx.ModelProto, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < version:
            entry.version = version
    model.ir_version = max(model.ir_version, 8 if version >= 15 else 7)


def topological_sort(model: onnx.ModelProto) -> None:
    """New nodes were appended at the end; ONNX requires producers before consumers."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ConversionError("optimize: graph has a cycle or an undefined input after fusion")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def drop_dead(model: onnx.ModelProto) -> int:
    g, removed = model.graph, 0
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        removed += len(dead)
        dead_ids = {id(n) for n in dead}
        keep = [n for n in g.node if id(n) not in dead_ids]
        del g.node[:]
        g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    return removed


def apply_fusions(model: onnx.ModelProto, max_opset: int) -> dict[str, int]:
    """Run every fusion to a fixed point; returns how often each applied."""
    counts: dict[str, int] = {}
    allowed = {n: f for n, f in FUSIONS.items() if f[1] <= max(max_opset, opset_of(model))}
    if any(n.op_type in OPSET_UNSAFE_OPS for n in model.graph.node):
        allowed = {n: f for n, f in allowed.items() if f[1] <= opset_of(model)}
    changed = True
    while changed:
        changed = False
        for name, (fusion, needs_opset) in allowed.items():
            done = fusion(model)
            if done:
                counts[name] = counts.get(name, 0) + done
                set_min_opset(model, needs_opset)
                topological_sort(model)
                changed = True
    counts["dead_nodes"] = drop_dead(model)
    return counts
