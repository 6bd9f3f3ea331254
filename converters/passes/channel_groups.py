"""Channel groups: give the narrow channels of a wide-ranging activation quantization ranges of their own.

Why: onnxruntime quantizes an activation with one range per tensor. After BatchNorm folding, some
convolutions of PP-LCNet / ESNet (PicoDet's backbones) give output channels 10-300x wider than
others; one 8-bit range for all of them leaves the narrow channels a step or two, and the depthwise
convolution after them, which amplifies each channel on its own, passes the damage on. Measured on
picodet_s_320_coco: plain INT8 box F1 vs FP32 0.00; the same INT8 with per-channel activation ranges
simulated on the 20 worst tensors: 1.00. Cross-layer equalisation would rescale the channels, but the
hard-swish after each convolution is not scale-equivariant, so the scale cannot move through it.

The rewrite, exact in float: a *seed* convolution is replaced by one convolution per group of its
output channels (grouped by range: a channel under 1/SPREAD of its group's widest starts a new group).
Its pieces travel on separately through per-channel operations (hard-swish, ReLU, max-pool,
depthwise convolutions with their weights sliced, and Concat, which just collects pieces), each
piece getting its own quantization range. Where the pieces meet a channel-mixing convolution they
are joined: by a Concat with the convolution's input channels permuted to match when one range
suits the joined tensor, else by one convolution per piece summed with Add. Any other consumer gets
the original tensor back (Concat + Gather). Seeds are ranked by how few 8-bit levels their narrowest
channels get; the quantize pass splits the fewest worst seeds that meet the accuracy budget, since
each one costs time (more, smaller kernels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..latency import session
from .graph_rewrites import Graph, attr, fuse_hardswish, set_min_opset, topological_sort

SPREAD = 8.0          # range ratio that opens a new group
MAX_GROUPS = 2        # more groups measured no more accurate on the layout model, and slower
DEAD = 1e-3           # channels under this share of the widest are ~0 everywhere: they join the widest group
MIN_LEVELS = 16.0     # a tensor whose 10% narrowest live channels get fewer 8-bit levels needs groups
SCORE_FEEDS = 4
CHANNELWISE = {"HardSwish", "Relu", "MaxPool"}     # per-channel operations the pieces pass through


def channel_peaks(model: onnx.ModelProto, feeds: list[dict], workdir: Path) -> dict[str, np.ndarray]:
    """Largest |value| per channel of every 4-D float activation, over `feeds` (reduced in the graph)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    rank4 = [v.name for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and len(v.type.tensor_type.shape.dim) == 4]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = []
    for i, name in enumerate(rank4):
        absolute, peak = f"edge_cg_abs{i}", f"edge_cg_peak{i}"
        probe.graph.node.extend([helper.make_node("Abs", [name], [absolute]),
                                 helper.make_node("ReduceMax", [absolute], [peak], axes=[0, 2, 3], keepdims=0)])
        outputs.append(peak)
    probe.graph.output.extend([helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs])
    path = workdir / "channel_groups.probe.onnx"
    onnx.save(probe, str(path))
    sess, peaks = session(path, 0), {}
    for feed in feeds[:SCORE_FEEDS]:
        for name, value in zip(rank4, sess.run(outputs, feed)):
            peaks[name] = np.maximum(peaks[name], value) if name in peaks else value
    path.unlink()
    return peaks


def levels(peak: np.ndarray) -> float:
    """8-bit levels left to the 10th-percentile narrowest live channel under one shared range."""
    live = peak > DEAD * peak.max()
    return float(np.percentile(peak[live] / peak.max() * 255, 10)) if live.any() else 255.0


def plan(src: Path, feeds: list[dict], workdir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Seed candidates of the FP32 graph at `src`, worst first, and every activation's channel peaks.

    A seed is a channel-mixing convolution feeding a hard-swish whose output leaves its narrow
    channels fewer than MIN_LEVELS levels."""
    model = onnx.load(str(src))
    if fuse_hardswish(model):
        set_min_opset(model, 14)
        topological_sort(model)
    peaks = channel_peaks(model, feeds, workdir)
    g, score = Graph(model), {}
    for conv in g.g.node:
        nxt = g.only_consumer(conv.output[0]) if conv.op_type == "Conv" else None
        if (nxt is not None and nxt.op_type == "HardSwish" and attr(conv, "group", 1) == 1
                and conv.output[0] in peaks and len(conv.input) > 2 and g.const(conv.input[1]) is not None):
            score[conv.name] = levels(peaks[conv.output[0]])
    return sorted((name for name in score if score[name] < MIN_LEVELS), key=score.get), peaks


def groups_by_range(peak: np.ndarray) -> list[list[int]]:
    """Channel indices, widest group first; at most MAX_GROUPS groups. Channels that are ~0 everywhere
    (under DEAD of the widest) lose nothing to any range, so they stay with the widest."""
    live = peak > DEAD * peak.max()
    order = [int(c) for c in np.argsort(-peak, kind="stable") if live[c]]
    groups, current = [], [order[0]]
    for c in order[1:]:
        if peak[current[0]] / peak[c] > SPREAD and len(groups) < MAX_GROUPS - 1:
            groups.append(current)
            current = []
        current.append(c)
    groups.append(current)
    groups[0] += [int(c) for c in np.flatnonzero(~live)]
    return [sorted(group) for group in groups]


Piece = tuple[str, np.ndarray]     # tensor holding some channels of an original tensor, and their indices


class _Streams:
    """One sweep over the graph in order, carrying split tensors as pieces (see the module text)."""

    def __init__(self, model: onnx.ModelProto, peaks: dict[str, np.ndarray]):
        self.g, self.peaks = Graph(model), peaks
        self.pieces: dict[str, list[Piece]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.joined: set[str] = set()
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}_cg{self.count}"

    def conv(self, like: onnx.NodeProto, x: str, w: np.ndarray, b: np.ndarray, **override) -> str:
        out = self.fresh(like.output[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in like.attribute}
        attrs.update(override)
        self.nodes.append(helper.make_node("Conv", [x, self.g.add_const(out + "_w", w), self.g.add_const(out + "_b", b)],
                                           [out], name=out, **attrs))
        return out

    def params(self, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        w = self.g.const(node.input[1])
        bias = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        return w, bias if bias is not None else np.zeros(w.shape[0], np.float32)

    def run(self, seeds: set[str]) -> int:
        split = 0
        for node in list(self.g.g.node):
            carried = [i for i in node.input if i in self.pieces]
            if not carried and node.name in seeds and self._seed(node):
                split += 1
            elif not carried:
                self.nodes.append(node)
            elif not self._carry(node, carried[0]):
                for tensor in carried:
                    self._restore(tensor)
                self.nodes.append(node)
        for out in self.g.g.output:
            if out.name in self.pieces:
                self._restore(out.name)
        del self.g.g.node[:]
        self.g.g.node.extend(self.nodes)
        return split

    def _seed(self, node: onnx.NodeProto) -> bool:
        groups = groups_by_range(self.peaks[node.output[0]])
        if len(groups) < 2:
            return False
        w, b = self.params(node)
        self.pieces[node.output[0]] = [(self.conv(node, node.input[0], w[idx], b[idx]), np.array(idx))
                                       for idx in groups]
        return True

    def _carry(self, node: onnx.NodeProto, tensor: str) -> bool:
        """Pass the pieces of `tensor` through `node` if it works per channel; False if it cannot."""
        pieces, out = self.pieces[tensor], node.output[0]
        if node.op_type in CHANNELWISE and len(node.input) == 1 and len(node.output) == 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            self.pieces[out] = []
            for piece, idx in pieces:
                name = self.fresh(out)
                self.nodes.append(helper.make_node(node.op_type, [piece], [name], name=name, **attrs))
                self.pieces[out].append((name, idx))
            return True
        if node.op_type == "Concat" and attr(node, "axis", 0) == 1 and all(i in self.peaks for i in node.input):
            self.pieces[out], offset = [], 0
            for i in node.input:
                own = self.pieces.get(i, [(i, np.arange(self.peaks[i].size))])
                self.pieces[out] += [(piece, idx + offset) for piece, idx in own]
                offset += self.peaks[i].size
            return True
        if node.op_type != "Conv" or node.input[0] != tensor or self.g.const(node.input[1]) is None:
            return False
        w, b = self.params(node)
        group = attr(node, "group", 1)
        if group == w.shape[0] == self.peaks[tensor].size and w.shape[1] == 1:       # depthwise: slice it
            self.pieces[out] = [(self.conv(node, piece, w[idx], b[idx], group=len(idx)), idx) for piece, idx in pieces]
            return True
        if group != 1:
            return False
        order = np.concatenate([idx for _, idx in pieces])
        if levels(self.peaks[tensor]) >= MIN_LEVELS:     # one range suits the joined tensor
            joined = self.fresh(tensor + "_join")
            self.nodes.append(helper.make_node("Concat", [p for p, _ in pieces], [joined], axis=1, name=joined))
            node.input[0], node.input[1] = joined, self.g.add_const(node.input[1] + "_perm", w[:, order])
            self.nodes.append(node)
            return True
        total = None            # conv(x) = sum over pieces of conv(piece) with that piece's input channels
        for k, (piece, idx) in enumerate(pieces):
            part = self.conv(node, piece, w[:, idx], b if k == 0 else np.zeros_like(b))
            if total is not None:
                name = out if k == len(pieces) - 1 else self.fresh(out + "_sum")
                self.nodes.append(helper.make_node("Add", [total, part], [name], name=name))
                part = name
            total = part
        return True

    def _restore(self, tensor: str) -> None:
        """The original tensor, channel order and all, for consumers that need it whole."""
        if tensor in self.joined:
            return
        pieces = self.pieces[tensor]
        joined, inverse = self.fresh(tensor + "_join"), self.fresh(tensor + "_order")
        self.g.g.initializer.append(numpy_helper.from_array(
            np.argsort(np.concatenate([idx for _, idx in pieces])).astype(np.int64), inverse))
        self.nodes.extend([helper.make_node("Concat", [p for p, _ in pieces], [joined], axis=1, name=joined),
                           helper.make_node("Gather", [joined, inverse], [tensor], axis=1, name=inverse + "_gather")])
        self.joined.add(tensor)


def split_channel_groups(model: onnx.ModelProto, peaks: dict[str, np.ndarray], seeds: list[str]) -> int:
    """Split the named seed convolutions (a graph with HardSwish ops); returns how many were split."""
    done = _Streams(model, peaks).run(set(seeds))
    topological_sort(model)
    return done


def hoist_concat_scale(model: onnx.ModelProto) -> int:
    """Concat(x1*k, x2*k, ...) ==> Concat(x1, x2, ...)*k, so the scale can then fold into the next conv
    (each piece's hard-swish ends in a multiplication by 1/6)."""
    g, done = Graph(model), 0
    for cat in list(g.g.node):
        if cat.op_type != "Concat":
            continue
        muls = [g.producer.get(i) for i in cat.input]
        if not muls or not all(m is not None and m.op_type == "Mul" and g.private(m.output[0]) for m in muls):
            continue
        scales = [[g.const(i) for i in m.input if g.const(i) is not None and g.const(i).size == 1] for m in muls]
        if not all(len(s) == 1 for s in scales) or len({float(s[0].ravel()[0]) for s in scales}) != 1:
            continue
        parts = [next(i for i in m.input if g.const(i) is None) for m in muls]
        out = cat.output[0]
        del cat.input[:]
        cat.input.extend(parts)
        cat.output[0] = out + "_unscaled"
        k = g.add_const(cat.name + "_scale", np.array(float(scales[0][0].ravel()[0])))
        g.g.node.append(helper.make_node("Mul", [out + "_unscaled", k], [out], name=cat.name + "_scale"))
        g.drop(*muls)
        done += 1
    g.commit()
    topological_sort(model)
    return done
