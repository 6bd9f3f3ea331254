"""A Paddle program run by Paddle Inference (CPU) in a worker process, for judging candidates.

Started with the host Python (which has paddle) by converters/runners/paddle_inference.py. It
speaks the model-worker framing of runtimes/workers/protocol.py, loaded by path (that file is
standalone on purpose), so nothing of edge is imported here.

Why oneDNN is off and the IR passes too: a quantized program (quantize_linear / dequantize_linear
around every quantized input) must run *as written*, each quantize op rounding to 8 bits in
float, which is the simulation of the device's integer arithmetic. oneDNN would run its own INT8
kernels instead of simulating the ARM ones; the CPU IR passes left PicoDet's quantized program
alone in Paddle 3.3.1 (outputs identical with them on, measured), and stay off so that no later
pass can fold the quantize ops away unseen. PIR programs with interpolate also fail under oneDNN.

Load header: {"model": program file, "params": weights file, "threads": CPU math threads}.
Load reply: Paddle's version, input names and shapes, output names, the quantize ops counted.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes" / "workers"))
os.environ.setdefault("GLOG_minloglevel", "2")

from protocol import serve  # noqa: E402  (standalone framing, by path)

QUANT_OPS = ("quantize_linear", "dequantize_linear")


def _count_quant_ops(model: str) -> int:
    """quantize/dequantize ops in a legacy program (0 for PIR or a float program): proof of what ran."""
    if not model.endswith(".pdmodel"):
        return 0
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc()
    desc.ParseFromString(Path(model).read_bytes())
    return sum(op.type in QUANT_OPS for block in desc.blocks for op in block.ops)


def load(header: dict):
    import paddle
    import paddle.inference as pi

    config = pi.Config(header["model"], header["params"])
    config.disable_mkldnn()
    config.switch_ir_optim(False)       # run the quantize ops as written (see the module text)
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(max(1, int(header.get("threads", 1))))
    predictor = pi.create_predictor(config)
    inputs = [{"name": n, "shape": list(predictor.get_input_handle(n).shape())} for n in predictor.get_input_names()]
    info = {"paddle": paddle.__version__, "machine": platform.machine(), "python": platform.python_version(),
            "inputs": inputs, "outputs": list(predictor.get_output_names()),
            "quant_ops": _count_quant_ops(header["model"])}
    return predictor, info


def run(predictor, arrays: dict) -> list:
    import numpy as np

    for name in predictor.get_input_names():
        if name not in arrays:
            raise KeyError(f"no feed for input '{name}'")
        handle = predictor.get_input_handle(name)
        value = np.ascontiguousarray(arrays[name])
        handle.reshape(list(value.shape))
        handle.copy_from_cpu(value)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


if __name__ == "__main__":
    serve(load, run)
