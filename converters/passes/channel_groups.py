"""Channel groups: give the narrow channels of a wide-ranging activation quantization ranges of their own.

Why: onnxruntime quantizes an activation with one range per tensor. After BatchNorm folding, some
convolutions of PP-LCNet / ESNet (PicoDet's backbones) give output channels 10-300x wider than
others; one 8-bit range for all of them leaves the narrow channels a step or two, and the depthwise
convolution after them, which amplifies each channel on its own, passes the damage on. Measured on
picodet_s_320_coco: plain INT8 box F1 vs FP32 0.00; the same INT8 with per-channel activation ranges
simulated on the 20 worst tensors: 1.00. Cross-layer equalisation would rescale the channels, but the
hard-swish after each convolution is not scale-equivariant, so the scale cannot move through it.

The rewrite, exact in float: a *seed* convolution is replaced by one convolution per group of its
output channels (grouped by range, each group spanning at most SPREAD, or as near as MAX_GROUPS allows).
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

SPREAD = 8.0          # widest/narrowest channel range a group may span
MAX_GROUPS = 3        # picodet_s_320_coco: a second group alone still left 1.3 levels to some channels
DEAD = 1e-3           # channels under this share of the widest are ~0 everywhere: they join the widest group
MIN_LEVELS = 16.0     # a tensor whose 10% narrowest live channels get fewer 8-bit levels needs groups
SCORE_FEEDS = 4
# per-channel operations the pieces pass through (extra inputs must be constants: Clip's bounds)
CHANNELWISE = {"HardSwish", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool"}


def channel_peaks(model: onnx.ModelProto, feeds: list[dict], workdir: Path) -> dict[str, np.ndarray]:
    """Largest |value| per channel of every 4-D float activation, over `feeds` (reduced in the graph)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    # axis 1 must be a fixed channel count: after a transpose it can be a width that changes per input
    rank4 = [v.name for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and len(v.type.tensor_type.shape.dim) == 4
             and v.type.tensor_type.shape.dim[1].dim_value > 0]
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
    sess, peaks, unstable = session(path, 0), {}, set()
    for feed in feeds[:SCORE_FEEDS]:
        for name, value in zip(rank4, sess.run(outputs, feed)):
            if name in peaks and peaks[name].shape != value.shape:
                unstable.add(name)          # shape inference could not tell; not a channel axis either
            elif name not in unstable:
                peaks[name] = np.maximum(peaks[name], value) if name in peaks else value
    path.unlink()
    return {name: peak for name, peak in peaks.items() if name not in unstable}


def levels(peak: np.ndarray) -> float:
    """8-bit levels left to the 10th-percentile narrowest live channel under one shared range."""
    live = peak > DEAD * peak.max()
    return float(np.percentile(peak[live] / peak.max() * 255, 10)) if live.any() else 255.0


def plan(src: Path, feeds: list[dict], workdir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Seed candidates of the FP32 graph at `src`, worst first, and every activation's channel peaks.

    A seed is a channel-mixing convolution feeding a hard-swish where the convolution's or the
    hard-swish's output leaves its narrow channels fewer than MIN_LEVELS levels, or a Concat whose
    output does (its inputs then simply stay apart: nothing is computed twice)."""
    model = onnx.load(str(src))
    if fuse_hardswish(model):
        set_min_opset(model, 14)
        topological_sort(model)
    peaks = channel_peaks(model, feeds, workdir)
    g, score = Graph(model), {}
    for node in g.g.node:
        nxt = g.only_consumer(node.output[0]) if node.op_type == "Conv" else None
        if (nxt is not None and nxt.op_type == "HardSwish" and attr(node, "group", 1) == 1 and len(node.input) > 2
                and g.const(node.input[1]) is not None and {node.output[0], nxt.output[0]} <= set(peaks)):
            score[node.name] = min(levels(peaks[node.output[0]]), levels(peaks[nxt.output[0]]))
        elif node.op_type == "Concat" and attr(node, "axis", 0) == 1 and set(node.input) | {node.output[0]} <= set(peaks):
            score[node.name] = levels(peaks[node.output[0]])
    return sorted((name for name in score if score[name] < MIN_LEVELS), key=score.get), peaks


def groups_by_range(peak: np.ndarray) -> list[list[int]]:
    """Channel indices, widest group first. The live channels' span of ranges (widest to 5th
    percentile) is cut into k equal ratios, k the fewest making each at most SPREAD (k <= MAX_GROUPS).
    Channels that are ~0 everywhere (under DEAD of the widest) lose nothing to any range: they stay
    with the widest."""
    live = peak > DEAD * peak.max()
    top, low = float(peak[live].max()), float(np.percentile(peak[live], 5))
    if top <= SPREAD * low:
        return [list(range(peak.size))]
    k = min(MAX_GROUPS, int(np.ceil(np.log(top / low) / np.log(SPREAD))))
    edges = top * (low / top) ** (np.arange(1, k) / k)
    group = ((peak[:, None] < edges[None, :]) & live[:, None]).sum(axis=1)
    return [sorted(int(c) for c in np.flatnonzero(group == j)) for j in range(k) if np.any(group == j)]


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
            if node.name in seeds and self._seed(node, carried):
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

    def _seed(self, node: onnx.NodeProto, carried: list[str]) -> bool:
        if node.op_type == "Concat":
            return self._carry(node, carried[0] if carried else node.input[0])
        if carried and carried[0] != node.input[0]:
            return False
        groups = groups_by_range(self.peaks[node.output[0]])
        if len(groups) < 2:
            return False
        inputs = self.pieces.get(node.input[0]) or [(node.input[0], np.arange(self.peaks[node.input[0]].size))]
        self._mix(node, inputs, [np.array(idx) for idx in groups])
        return True

    def _carry(self, node: onnx.NodeProto, tensor: str) -> bool:
        """Pass the pieces of `tensor` through `node` if it works per channel; False if it cannot."""
        pieces, out = self.pieces.get(tensor, []), node.output[0]
        if (node.op_type in CHANNELWISE and len(node.output) == 1 and node.input[0] == tensor
                and all(self.g.const(i) is not None for i in node.input[1:] if i)):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            self.pieces[out] = []
            for piece, idx in pieces:
                name = self.fresh(out)
                self.nodes.append(helper.make_node(node.op_type, [piece, *node.input[1:]], [name], name=name, **attrs))
                self.pieces[out].append((name, idx))
            return True
        if node.op_type == "Concat" and attr(node, "axis", 0) == 1 and all(i in self.peaks for i in node.input):
            self.pieces[out], offset = [], 0
            for i in node.input:
                own = self.pieces.get(i, [(i, np.arange(self.peaks[i].size))])
                self.pieces[out] += [(piece, idx + offset) for piece, idx in own]
                offset += self.peaks[i].size
            return True
        if node.op_type == "Mul" and len(node.input) == 2:
            return self._scale(node, tensor)
        if node.op_type != "Conv" or node.input[0] != tensor or self.g.const(node.input[1]) is None:
            return False
        w, b = self.params(node)
        group = attr(node, "group", 1)
        if group == w.shape[0] == self.peaks[tensor].size and w.shape[1] == 1:       # depthwise: slice it
            self.pieces[out] = [(self.conv(node, piece, w[idx], b[idx], group=len(idx)), idx) for piece, idx in pieces]
            return True
        if group != 1:
            return False
        self._mix(node, pieces, None)
        return True

    def _mix(self, node: onnx.NodeProto, pieces: list[Piece], groups: list[np.ndarray] | None) -> None:
        """A channel-mixing conv over split input `pieces`, its output whole (`groups` None) or in groups.

        When one range suits the joined input, the pieces are concatenated and the weights' input
        channels permuted; else conv(x) = sum over pieces of conv(piece) with that piece's channels."""
        w, b = self.params(node)
        tensor, out = node.input[0], node.output[0]
        if len(pieces) > 1 and levels(self.peaks[tensor]) >= MIN_LEVELS:
            joined = self.fresh(tensor + "_join")
            self.nodes.append(helper.make_node("Concat", [p for p, _ in pieces], [joined], axis=1, name=joined))
            pieces = [(joined, np.concatenate([idx for _, idx in pieces]))]
        made = []
        for rows in groups if groups is not None else [np.arange(w.shape[0])]:
            total = None
            for k, (piece, idx) in enumerate(pieces):
                part = self.conv(node, piece, w[rows][:, idx], b[rows] if k == 0 else np.zeros(len(rows), np.float32))
                if total is not None:
                    name = self.fresh(out + "_sum")
                    self.nodes.append(helper.make_node("Add", [total, part], [name], name=name))
                    part = name
                total = part
            made.append((total, rows))
        if groups is not None:
            self.pieces[out] = made
        else:
            self.nodes.append(helper.make_node("Identity", [made[0][0]], [out], name=self.fresh(out + "_whole")))

    def _scale(self, mul: onnx.NodeProto, tensor: str) -> bool:
        """Mul(pieces, s) with s a scalar or one value per channel (a squeeze-excitation gate): per piece,
        with the piece's own channels of s picked by a Gather (s is tiny)."""
        other = mul.input[1] if mul.input[0] == tensor else mul.input[0]
        size = self.peaks[tensor].size
        shape = self.g.const(other).shape if self.g.const(other) is not None else None
        per_channel = other in self.peaks and self.peaks[other].size == size and other not in self.pieces
        if other in self.pieces or not (per_channel or (shape is not None and int(np.prod(shape)) == 1)):
            return False
        self.pieces[mul.output[0]] = []
        for piece, idx in self.pieces[tensor]:
            factor = other
            if per_channel:
                factor = self.fresh(other + "_pick")
                self.g.g.initializer.append(numpy_helper.from_array(idx.astype(np.int64), factor + "_idx"))
                self.nodes.append(helper.make_node("Gather", [other, factor + "_idx"], [factor], axis=1, name=factor))
            name = self.fresh(mul.output[0])
            self.nodes.append(helper.make_node("Mul", [piece, factor], [name], name=name))
            self.pieces[mul.output[0]].append((name, idx))
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
