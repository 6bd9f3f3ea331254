"""An onnxruntime model in a worker process: any interpreter that has onnxruntime and numpy.

Standalone on purpose (stdlib + numpy + onnxruntime, nothing of edge): it runs under the host
Python and under an emulated aarch64 CPython whose site folder holds only the aarch64 wheels
(converters/toolchains/arm_emulator.py), so it imports protocol.py from its own folder by path.

Load header: {"path": model file, "threads": intra-op threads (0 = onnxruntime's default)}.
Load reply: onnxruntime's version, the machine it really runs on, input names/shapes/types and
output names. Each request's arrays are the feeds by input name; the reply holds all outputs in
the model's order.
"""
from __future__ import annotations

import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnxruntime as ort  # noqa: E402  (after the path insert: protocol.py sits beside this file)
from protocol import serve  # noqa: E402


def _shape(dims) -> list:
    # symbolic dimensions travel as their names, unknown ones as None (JSON has no other choice)
    return [d if isinstance(d, (int, str)) else None for d in dims]


def load(header: dict):
    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL   # as a device runs it
    opts.log_severity_level = 3
    threads = int(header.get("threads", 1))
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(header["path"], opts, providers=["CPUExecutionProvider"])
    info = {
        "onnxruntime": ort.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "inputs": [{"name": i.name, "shape": _shape(i.shape), "type": i.type} for i in sess.get_inputs()],
        "outputs": [o.name for o in sess.get_outputs()],
    }
    return sess, info


def run(sess, arrays: dict) -> list:
    return sess.run(None, arrays)


if __name__ == "__main__":
    serve(load, run)
