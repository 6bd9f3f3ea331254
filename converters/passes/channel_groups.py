"""Channel groups: give the narrow channels of a wide-ranging activation a quantization range of their own.

Why: onnxruntime quantizes an activation with one range per tensor. After BatchNorm folding, the
pointwise convolutions of PP-LCNet / PicoDet give some output channels values 10-20x wider than
others (picodet_lcnet_layout_cdla: widest/median channel range up to 21x); one 8-bit range for all
of them leaves the narrow channels a few steps (10th-percentile channel SQNR 2-17 dB), and the
depthwise convolution after them, which amplifies each channel on its own, passes the damage on:
box F1 vs FP32 0.74-0.78. Cross-layer equalisation would rescale the channels, but the hard-swish
between the convolutions is not scale-equivariant, so the scale cannot move through it.

The rewrite, exact in float: a block  pointwise Conv P -> HardSwish -> depthwise Conv D -> HardSwish
becomes one such chain per group of P's output channels (grouped by range: a channel under 1/SPREAD
of its group's widest starts a new group), joined by a Concat. Each group's tensors get their own
ranges. The Concat changes the channel order; the consumers' weights are permuted to match when
they are all convolutions, else a Gather restores the order. Splitting costs time (more, smaller
kernels), so blocks are ranked by how badly per-tensor 8-bit quantization treats their narrow
channels, and the quantize pass splits the fewest worst blocks that meet the accuracy budget
(measured on the layout model: the 4 worst of 27 blocks give box F1 1.0 at 0.57x FP32 latency;
all 27: 0.75-0.84x).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..latency import session
from .graph_rewrites import Graph, attr, fuse_hardswish, set_min_opset, topological_sort

SPREAD = 8.0          # range ratio that opens a new group
MAX_GROUPS = 2        # more groups measured no more accurate, and slower (layout: 0.88 vs 0.78 with 2)
DEAD = 1e-3           # channels under this share of the widest are ~0 everywhere: they join the widest group
SCORE_FEEDS = 4
SCORE_KEEP = 30.0     # dB: a block whose narrow channels keep this much is not worth splitting
LEVELS = 255          # uint8 activations


def find_blocks(g: Graph) -> list[tuple[onnx.NodeProto, ...]]:
    """(P, HardSwish, D, HardSwish) chains where every link has a single consumer."""
    blocks = []
    for pw in g.g.node:
        if pw.op_type != "Conv" or attr(pw, "group", 1) != 1 or g.const(pw.input[1]) is None:
            continue
        hs = g.only_consumer(pw.output[0])
        dw = g.only_consumer(hs.output[0]) if hs is not None and hs.op_type == "HardSwish" else None
        channels = g.const(pw.input[1]).shape[0]
        if dw is None or dw.op_type != "Conv" or attr(dw, "group", 1) != channels or g.const(dw.input[1]) is None:
            continue
        hs2 = g.only_consumer(dw.output[0])
        if hs2 is not None and hs2.op_type == "HardSwish" and len(pw.input) > 2 and len(dw.input) > 2:
            blocks.append((pw, hs, dw, hs2))
    return blocks


def _channel_values(model: onnx.ModelProto, tensors: list[str], feeds: list[dict], workdir: Path):
    """Yield {tensor: array (C, N)} per feed, from one session with the tensors as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors])
    path = workdir / "channel_groups.probe.onnx"
    onnx.save(probe, str(path))
    sess = session(path, 0)
    for feed in feeds:
        values = sess.run(tensors, feed)
        yield {t: np.moveaxis(v, 1, 0).reshape(v.shape[1], -1) for t, v in zip(tensors, values)}
    path.unlink()


def measure(model: onnx.ModelProto, feeds: list[dict], workdir: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per block (named by its pointwise conv): the 10th-percentile channel SQNR (dB) of its output
    under one uint8 range, and each channel's largest |value|. Two runs over the feeds: ranges, errors."""
    g = Graph(model)
    blocks = {b[0].name: b[0].output[0] for b in find_blocks(g)}
    if not blocks:
        return {}, {}
    feeds = feeds[:SCORE_FEEDS]
    tensors = list(blocks.values())
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    peak = {t: 0.0 for t in tensors}
    for values in _channel_values(model, tensors, feeds, workdir):
        for t, v in values.items():
            lo[t], hi[t] = min(lo[t], float(v.min()), 0.0), max(hi[t], float(v.max()), 0.0)
            peak[t] = np.maximum(peak[t], np.abs(v).max(axis=1))
    signal = {t: 0.0 for t in tensors}
    noise = {t: 0.0 for t in tensors}
    for values in _channel_values(model, tensors, feeds, workdir):
        for t, v in values.items():
            step = (hi[t] - lo[t]) / LEVELS or 1.0
            quantized = np.round((v - lo[t]) / step) * step + lo[t]
            signal[t] = signal[t] + (v.astype(np.float64) ** 2).sum(axis=1)
            noise[t] = noise[t] + ((v - quantized).astype(np.float64) ** 2).sum(axis=1)
    scores = {}
    for name, t in blocks.items():
        live = peak[t] > DEAD * peak[t].max()
        sqnr = 10 * np.log10(signal[t][live] / np.maximum(noise[t][live], 1e-24))
        scores[name] = float(np.percentile(sqnr, 10)) if sqnr.size else 100.0
    return scores, {name: peak[t] for name, t in blocks.items()}


def plan(src: Path, feeds: list[dict], workdir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Blocks of the FP32 graph at `src`, worst first (lowest narrow-channel SQNR), with their channel
    peaks; blocks whose narrow channels keep SCORE_KEEP dB or more are left out (splitting them buys nothing)."""
    model = onnx.load(str(src))
    if fuse_hardswish(model):
        set_min_opset(model, 14)
        topological_sort(model)
    scores, peaks = measure(model, feeds, workdir)
    ranked = sorted((name for name in scores if scores[name] < SCORE_KEEP), key=scores.get)
    return ranked, peaks


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


def _copy_attrs(node: onnx.NodeProto, **override) -> dict:
    found = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    found.update(override)
    return found


def split_blocks(model: onnx.ModelProto, peaks: dict[str, np.ndarray]) -> int:
    """Split each block whose pointwise conv is named in `peaks` into channel groups; returns how many."""
    g, done = Graph(model), 0
    for pw, hs, dw, hs2 in find_blocks(g):
        groups = groups_by_range(peaks[pw.name]) if pw.name in peaks else []
        if len(groups) < 2:
            continue
        w, b, wd, bd = (g.const(n) for n in (pw.input[1], pw.input[2], dw.input[1], dw.input[2]))
        outs = []
        for k, idx in enumerate(groups):
            p = f"{pw.name}_grp{k}"
            g.g.node.extend([
                helper.make_node("Conv", [pw.input[0], g.add_const(p + "_w", w[idx]), g.add_const(p + "_b", b[idx])],
                                 [p + "_x"], name=p + "_pw", **_copy_attrs(pw)),
                helper.make_node("HardSwish", [p + "_x"], [p + "_h"], name=p + "_hs"),
                helper.make_node("Conv", [p + "_h", g.add_const(p + "_dw", wd[idx]), g.add_const(p + "_db", bd[idx])],
                                 [p + "_d"], name=p + "_dw", **_copy_attrs(dw, group=len(idx))),
                helper.make_node("HardSwish", [p + "_d"], [p + "_h2"], name=p + "_hs2")])
            outs.append(p + "_h2")
        _join(g, pw.name, outs, hs2.output[0], np.concatenate(groups))
        g.drop(pw, hs, dw, hs2)
        done += 1
    g.commit()
    topological_sort(model)
    return done


def _join(g: Graph, base: str, parts: list[str], tensor: str, order: np.ndarray) -> None:
    """Concat the groups into `tensor`; its consumers see the original channel order."""
    users = g.consumers.get(tensor, [])
    if tensor not in g.outputs and users and all(u.op_type == "Conv" and attr(u, "group", 1) == 1 for u in users):
        for user in users:        # permuting the consumers' input channels costs nothing at run time
            user.input[1] = g.add_const(user.input[1] + "_perm", g.const(user.input[1])[:, order])
        g.g.node.append(helper.make_node("Concat", parts, [tensor], axis=1, name=base + "_grp_concat"))
        return
    inverse = base + "_grp_inverse"
    g.g.initializer.append(numpy_helper.from_array(np.argsort(order).astype(np.int64), inverse))
    g.g.node.extend([helper.make_node("Concat", parts, [base + "_grp_concat"], axis=1, name=base + "_grp_concat"),
                     helper.make_node("Gather", [base + "_grp_concat", inverse], [tensor], axis=1,
                                      name=base + "_grp_order")])


def hoist_concat_scale(model: onnx.ModelProto) -> int:
    """Concat(x1*k, x2*k, ...) ==> Concat(x1, x2, ...)*k, so the scale can then fold into the next conv
    (each group's hard-swish ends in a multiplication by 1/6)."""
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
