"""Paddle's post-training quantization of a legacy program, in a child process.

`python -m converters.paddle_ptq_worker quantize --jobs JOBS.json` (and `census --model OPT_PROGRAM`),
called through converters/worker_call.py; one JSON line on stdout is the verdict. Why a child: see
converters/paddle_worker.py (paddle is slow to import, noisy, and can abort the process).

quantize: `paddle.static.quantization.PostTrainingQuantization` under FLAGS_enable_pir_api=0 (the
legacy program is what Paddle Lite's opt reads), feeds from an npz written by the parent (the
family's calibration inputs), onnx_format=True (quantize_linear / dequantize_linear ops, which
Paddle Lite 2.13 reads), symmetric int8 activations per tensor, int8 weights per output channel.
Several jobs (range algorithm, tensors kept in float) share one process: importing paddle and
loading the program cost more than one PicoDet calibration.

A job may also rank its quantized ops by sensitivity: each op's own SQNR against FP32, the op fed
the FP32 input rounded with its calibrated range and its int8 weights, on a few calibration feeds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ["FLAGS_enable_pir_api"] = "0"      # before paddle is imported: legacy programs only

QUANTIZED_OPS = ["conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2"]


def _feeds(path: str) -> list[dict]:
    """The parent's npz: keys 'f<index>__<input name>' -> one feed dict per index, in order."""
    import numpy as np

    data = np.load(path)
    order = sorted({key.split("__", 1)[0] for key in data.files})
    return [{key.split("__", 1)[1]: data[key] for key in data.files if key.split("__", 1)[0] == index}
            for index in order]


def _lite_quantizer():
    """Paddle Lite's ARM settings (range -127..127) without the observer quantize ops Paddle's PTQ
    would put after every other op: they never round (only_observer) and their insertion costs
    PicoDet 90 of 100 s (a search over all persistable nodes per op)."""
    from paddle.static.quantization.quant_config import ARMCPUQuantizer

    class LiteQuantizer(ARMCPUQuantizer):
        @property
        def observer_operation_types(self):
            return []

    return LiteQuantizer(quantizable_op_type=QUANTIZED_OPS, quant_bits=8)


def _links_without_membership_scans() -> None:
    """Paddle's IrGraph.link_to / update_input_link / update_output_link first assert that their nodes are
    in the graph by building the set of *all* its nodes, 2-3 times per call: quadratic in the graph.
    PicoDet-S-320's PTQ job took 8.2 s with those scans and 3.2 s without (its calibration runs: 0.8 s). The nodes always come from the graph being rewritten, so the
    links are made without the scans. Measured on PicoDet, plain and with 4 layers in float: the same
    operators with the same inputs, outputs and attributes, the same variables, byte-identical weights;
    only the order of independent operators differs, as it does between two runs of Paddle's own."""
    from paddle.base.framework import IrGraph

    def link_to(self, node_in, node_out):
        node_in.append_output(node_out)
        node_out.append_input(node_in)

    def update_input_link(self, old_input_node, new_input_node, op_node):
        old_input_node.remove_output(op_node)
        op_node.remove_input(old_input_node)
        new_input_node.append_output(op_node)
        op_node.append_input(new_input_node)
        op_node.rename_input(old_input_node.name(), new_input_node.name())

    def update_output_link(self, old_output_node, new_output_node, op_node):
        old_output_node.remove_input(op_node)
        op_node.remove_output(old_output_node)
        new_output_node.append_input(op_node)
        op_node.append_output(new_output_node)
        op_node.rename_output(old_output_node.name(), new_output_node.name())

    IrGraph.link_to, IrGraph.update_input_link, IrGraph.update_output_link = (link_to, update_input_link,
                                                                              update_output_link)


def _persistable_lookups_indexed() -> None:
    """AddQuantDequantForInferencePass looks up each activation's scale and zero-point node by name in
    graph.all_persistable_nodes(), a set Paddle rebuilds from every node of the graph on each call: 268
    rebuilds took 2.9 of PicoDet-S-320's 4.8 s PTQ job. During that pass the set is built once and kept up
    to date by create_persistable_node (the pass removes no persistable node; _find_node_by_name returns a
    node of that name, whichever set it scans). EDGE_PTQ_PADDLE_LINKS=1 turns this off like the links."""
    from paddle.static.quantization.quantization_pass import AddQuantDequantForInferencePass

    plain_apply = AddQuantDequantForInferencePass.apply

    def apply(self, graph):
        known = graph.all_persistable_nodes()
        plain_create = graph.create_persistable_node

        def create_persistable_node(*args, **kwargs):
            node = plain_create(*args, **kwargs)
            known.add(node)
            return node

        graph.all_persistable_nodes = lambda: known
        graph.create_persistable_node = create_persistable_node
        try:
            return plain_apply(self, graph)
        finally:
            del graph.all_persistable_nodes, graph.create_persistable_node

    AddQuantDequantForInferencePass.apply = apply


def _run_job(paddle, job: dict, model: Path, params: Path, feeds: list[dict]) -> None:
    from paddle.static.quantization import PostTrainingQuantization

    scope = paddle.static.Scope()     # each job loads the FP32 weights afresh
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        ptq = PostTrainingQuantization(
            executor=exe, scope=scope, model_dir=str(model.parent), model_filename=model.name,
            params_filename=params.name, data_loader=lambda: iter(feeds), batch_nums=len(feeds),
            algo=job["algo"], hist_percent=job.get("hist_percent", 0.99999), onnx_format=True,
            activation_quantize_type="range_abs_max", weight_quantize_type="channel_wise_abs_max",
            skip_tensor_list=list(job.get("skip", [])) or None, quantizable_op_type=QUANTIZED_OPS)
        ptq.quant_config = _lite_quantizer()
        ptq.quantize()
        ptq._clip_extra = False       # see _trim_attrs
        ptq.save_quantized_model(job["out"], model_filename="model.pdmodel", params_filename="model.pdiparams")
    _trim_attrs(model, Path(job["out"]) / "model.pdmodel")


def _trim_attrs(source: Path, saved: Path) -> int:
    """Give every op the attribute set its twin in the source program had (twins: same type, same outputs).

    onnx_format saves with clip_extra, which drops what Paddle 3 calls "extra" attributes *and outputs*,
    some of which Paddle Lite 2.13 still reads: opt aborted on PP-OCRv4 rec ("No attributes called beta
    found for swish"), and with the attributes put back it still crashed (SIGSEGV; flatten's XShape
    output, among others, was gone). So the program is saved whole, and the oneDNN/device attributes
    the save adds and the source never had are dropped (PicoDet's .nb: 2.6 MB whole, 1.9 MB trimmed)."""
    from paddle.base.proto import framework_pb2

    def program(path: Path):
        desc = framework_pb2.ProgramDesc()
        desc.ParseFromString(path.read_bytes())
        return desc

    def key(op) -> tuple:
        return op.type, tuple(a for o in op.outputs for a in o.arguments)

    src, out = program(source), program(saved)
    twins = {key(op): {a.name for a in op.attrs} for block in src.blocks for op in block.ops}
    dropped = 0
    for block in out.blocks:
        for op in block.ops:
            keep = twins.get(key(op))
            if keep is None:          # an op the quantization added: left as written
                continue
            kept = [a for a in op.attrs if a.name in keep]
            dropped += len(op.attrs) - len(kept)
            del op.attrs[:]
            op.attrs.extend(kept)
    saved.write_bytes(out.SerializeToString())
    return dropped


def _prepare_paddle():
    import paddle

    paddle.enable_static()
    if not os.environ.get("EDGE_PTQ_PADDLE_LINKS"):     # set: Paddle's own code (to compare programs)
        _links_without_membership_scans()
        _persistable_lookups_indexed()
    return paddle


def quantize(args: argparse.Namespace) -> dict:
    return quantize_jobs(_prepare_paddle(), Path(args.jobs), {})


def quantize_jobs(paddle, jobs_file: Path, state: dict) -> dict:
    """Every job: {"algo", "skip": weight names whose ops stay float, "out": folder, "probe": feeds for
    the outputs' SQNR against FP32 (0: none), "rank": also rank the quantized ops by sensitivity,
    "existing": the program in "out" is already quantized (rank it only)}. `state` keeps the FP32
    reference values from one call to the next in a session (see serve_session)."""
    spec = json.loads(jobs_file.read_text(encoding="utf-8"))
    model, params = Path(spec["model"]), Path(spec["params"])
    feeds = _feeds(spec["feeds"])
    if state.get("reference_of") != (spec["model"], spec["feeds"]):
        state.update(reference=None, reference_of=(spec["model"], spec["feeds"]))
    reference: dict | None = state["reference"]
    done = []
    for job in spec["jobs"]:
        started = time.perf_counter()
        if not job.get("existing"):
            _run_job(paddle, job, model, params, feeds)
        result = {"out": job["out"], "seconds": round(time.perf_counter() - started, 1)}
        probe = feeds[: int(job.get("probe", 0))]
        if probe:
            started = time.perf_counter()
            every = bool(job.get("rank"))     # the ranking needs every activation; the SQNR only the outputs
            if reference is None or len(reference["feeds"]) < len(probe) or (every and not reference["every"]):
                reference = _reference(paddle, model, params, probe, every, Path(spec["feeds"]))
            out = Path(job["out"])
            result.update(_sensitivity(paddle, reference, out / "model.pdmodel", out / "model.pdiparams",
                                       bool(job.get("rank"))))
            result["probe_seconds"] = round(time.perf_counter() - started, 1)
        done.append(result)
    state["reference"] = reference
    return {"paddle": paddle.__version__, "jobs": done}


def serve_session() -> None:
    """`python -m converters.paddle_ptq_worker serve`: one process for a whole PTQ search, so paddle is imported
    and the FP32 reference computed once, not per candidate (each fresh process cost a PicoDet candidate ~4.5 s
    of its ~10 s). Model-worker framing (runtimes/workers/protocol.py); commands: "quantize" {jobs} as the
    quantize subcommand, "open" {model, params, threads} makes the Paddle Inference predictor that judges a
    candidate (converters/paddle_infer_worker.py's, the same settings), and inference requests run it."""
    import io

    from . import paddle_infer_worker as infer      # puts runtimes/workers on sys.path, for protocol

    from protocol import serve  # noqa: E402  (standalone framing, by path)

    channel = os.dup(1)             # frames go to the real stdout; anything else writing to fd 1 goes to stderr
    os.dup2(2, 1)
    frames = io.TextIOWrapper(os.fdopen(channel, "wb"))    # held here: serve() swaps sys.stdout away, and a
    sys.stdout = frames                                     # dropped wrapper would close the channel

    def load(header: dict):
        paddle = _prepare_paddle()
        return {"paddle": paddle, "predictor": None, "state": {}}, {"paddle": paddle.__version__}

    def quantize_command(session: dict, request: dict) -> dict:
        return quantize_jobs(session["paddle"], Path(request["jobs"]), session["state"])

    def open_command(session: dict, request: dict) -> dict:
        session["predictor"] = None          # the previous candidate's predictor goes first
        session["predictor"], info = infer.load(request)
        return info

    def run(session: dict, arrays: dict) -> list:
        if session["predictor"] is None:
            raise RuntimeError("no program opened in this session")
        return infer.run(session["predictor"], arrays)

    serve(load, run, {"quantize": quantize_command, "open": open_command})


def _reference(paddle, model: Path, params: Path, probe: list[dict], every: bool, feeds_file: Path) -> dict:
    """The FP32 program's values on the probe feeds. Outputs only (every candidate's SQNR) are kept beside the
    feeds file, so the next call of the same search (a new process) reads them instead of running the FP32
    program again (PP-OCRv4 det: 1.5 s a call)."""
    import numpy as np

    import hashlib

    stat = feeds_file.stat()       # the parent writes the feeds anew for every search: a new key
    key = hashlib.sha256(f"{model.resolve()}|{params.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{len(probe)}"
                         .encode()).hexdigest()[:16]
    cache = feeds_file.with_name(f"{feeds_file.stem}.fp32_outputs.{key}.npz")
    if not every and cache.is_file():
        with np.load(cache) as data:
            names = [str(n) for n in data["names"]]
            values = {name: [data[f"v{i}_{k}"] for k in range(len(probe))] for i, name in enumerate(names)}
        return {"feeds": probe, "every": False, "values": values}
    found = {"feeds": probe, "every": every, **_activations(paddle, model, params, probe, every)}
    if not every:
        arrays = {f"v{i}_{k}": v for i, name in enumerate(found["values"]) for k, v in enumerate(found["values"][name])}
        np.savez(cache, names=np.array(list(found["values"])), **arrays)
    return found


def _load(exe, model: Path, params: Path):
    import paddle

    if model.parent != params.parent:
        raise ValueError(f"{model.name} and {params.name} must sit in one folder")
    program, _, fetch_vars = paddle.static.load_inference_model(str(model.parent), exe, model_filename=model.name,
                                                                params_filename=params.name)
    return program, [v.name for v in fetch_vars]


def _activations(paddle, model: Path, params: Path, feeds: list[dict], every: bool = True) -> dict:
    """Every float activation of the program on `feeds` (`every` False: its outputs only), with the
    program and its output names. Fetching all of them is what costs: PP-OCRv4 rec, 339 activations,
    6-14 s a feed against 0.2-0.5 s for the outputs alone (Paddle 3.3.1 static executor, measured)."""
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, outputs = _load(exe, model, params)
        block = program.global_block()
        wanted = sorted(v.name for v in block.vars.values() if not v.persistable and v.dtype == paddle.float32
                        and v.name not in ("feed", "fetch") and (every or v.name in outputs))
        runs = [exe.run(program, feed=feed, fetch_list=wanted, return_numpy=True) for feed in feeds]
    return {"program": program, "outputs": outputs,
            "values": {name: [run[i] for run in runs] for i, name in enumerate(wanted)}}


def _sqnr(ref: list, got: list) -> float:
    import numpy as np

    a = np.concatenate([np.asarray(r, np.float64).ravel() for r in ref])
    b = np.concatenate([np.asarray(g, np.float64).ravel() for g in got])
    noise = np.linalg.norm(a - b)
    return 20 * math.log10(max(np.linalg.norm(a), 1e-12) / max(noise, 1e-12))


def _fake_quant(x, scale: float):
    """quantize_linear + dequantize_linear as Paddle computes them: symmetric, 127 steps a side."""
    import numpy as np

    return np.round(np.clip(x, -scale, scale) * 127.0 / scale) * scale / 127.0


def _apply(paddle, op, x, w):
    """The op on arrays (dygraph); None for an op type this probe does not compute."""
    import paddle.nn.functional as F

    x, w = paddle.to_tensor(x), paddle.to_tensor(w)
    layout = op.attr("data_format") if op.has_attr("data_format") else "NCHW"
    if op.type in ("conv2d", "depthwise_conv2d") and layout in ("NCHW", "AnyLayout"):
        algorithm = op.attr("padding_algorithm") if op.has_attr("padding_algorithm") else "EXPLICIT"
        padding = algorithm if algorithm in ("SAME", "VALID") else list(op.attr("paddings"))
        return F.conv2d(x, w, stride=list(op.attr("strides")), padding=padding, dilation=list(op.attr("dilations")),
                        groups=op.attr("groups")).numpy()
    if op.type == "matmul_v2":
        return paddle.matmul(x, w, transpose_x=op.attr("trans_x"), transpose_y=op.attr("trans_y")).numpy()
    return None


def _quantized_ops(program, persistable: set[str]) -> list[tuple]:
    """(op, activation var, its scale var, weight var, dequantized weight var) per quantized op."""
    quant = {op.output("Y")[0]: (op.input("X")[0], op.input("Scale")[0])
             for op in program.global_block().ops if op.type == "quantize_linear"}
    dequant = {op.output("Y")[0]: op.input("X")[0]
               for op in program.global_block().ops if op.type == "dequantize_linear"}
    found = []
    for op in program.global_block().ops:
        if op.type not in QUANTIZED_OPS:
            continue
        weight = next((n for n in op.input_arg_names if dequant.get(n) in persistable), None)
        act = next((quant[dequant[n]] for n in op.input_arg_names if dequant.get(n) in quant), None)
        if weight and act:
            found.append((op, act[0], act[1], dequant[weight], weight))
    return found


def _sensitivity(paddle, reference: dict, model: Path, params: Path, rank: bool = True) -> dict:
    """ranked: the ops still quantized, worst first, by their *own* damage: SQNR against FP32 of the op
    fed the FP32 input rounded with its calibrated range and its int8 weights (so a layer ruined
    upstream does not hide or blame another). output_sqnr: the model outputs' SQNR against FP32
    (a finer signal than a metric stuck at 0)."""
    import numpy as np

    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, outputs = _load(exe, model, params)
        persistable = {v.name for v in program.list_vars() if v.persistable}
        ops = _quantized_ops(program, persistable) if rank else []
        fetch = list(outputs) + [dq for *_, dq in ops]
        runs = [exe.run(program, feed=feed, fetch_list=fetch, return_numpy=True) for feed in reference["feeds"]]
        scales = {s: float(np.array(scope.find_var(s).get_tensor()).ravel()[0]) for _, _, s, _, _ in ops}
    got = dict(zip(fetch, runs[0]))
    ref = reference["values"]
    paddle.disable_static()
    try:
        ranked = []
        for op, act, scale, weight, dequantized in ops:
            out = op.output_arg_names[0]
            if act not in ref or out not in ref:
                continue
            local = [_apply(paddle, op, _fake_quant(x, scales[scale]), got[dequantized]) for x in ref[act]]
            if local[0] is not None:
                ranked.append({"weight": weight, "op": op.type, "sqnr": round(_sqnr(ref[out], local), 3)})
    finally:
        paddle.enable_static()
    ranked.sort(key=lambda r: r["sqnr"])
    sqnrs = [_sqnr(ref[name], [run[i] for run in runs]) for i, name in enumerate(outputs) if name in ref]
    return {"ranked": ranked, "output_sqnr": round(min(sqnrs), 3) if sqnrs else None}


def census(args: argparse.Namespace) -> dict:
    """Operators of a program written by Paddle Lite's opt (protobuf), by type and by whether opt
    set them to run in int8 (`enable_int8`): what the `.nb` made from the same run will execute."""
    from collections import Counter

    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc()
    desc.ParseFromString(Path(args.model).read_bytes())
    int8, other = Counter(), Counter()
    for op in desc.blocks[0].ops:
        flag = next((a.b for a in op.attrs if a.name == "enable_int8"), False)
        (int8 if flag else other)[op.type] += 1
    return {"int8": dict(int8), "float_or_other": dict(other)}


def main() -> int:
    from .paddle_worker import report_verdict

    parser = argparse.ArgumentParser(prog="python -m converters.paddle_ptq_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("quantize").add_argument("--jobs", required=True)
    sub.add_parser("census").add_argument("--model", required=True)
    sub.add_parser("serve")
    args = parser.parse_args()
    if args.command == "serve":
        serve_session()
        return 0
    return report_verdict(quantize if args.command == "quantize" else census, args)


if __name__ == "__main__":
    sys.exit(main())
