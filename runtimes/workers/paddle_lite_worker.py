"""A Paddle Lite `.nb` model in a worker process: any interpreter that has paddlelite and numpy.

Standalone on purpose (stdlib + numpy + paddlelite, nothing of edge): it runs under the Python that
has Paddle Lite, which is often not the daemon's (the x86 wheel exists only for CPython <= 3.10; on a
Pi the official ARM module is built for one Python), so it imports protocol.py from its own folder.
A native crash in Paddle Lite (it segfaults on some files) ends only this process.

Load header: {"path": .nb file, "threads": threads (0 = Paddle Lite's default)}.
Load reply: paddlelite's version, the machine, the input and output names in the model's order,
and whether the thread count could be applied (the x86 wheel's MobileConfig has no set_threads).
Each request's arrays are the feeds by input name; the reply holds all outputs in order.
"""
from __future__ import annotations

import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from paddlelite.lite import MobileConfig, create_paddle_predictor  # noqa: E402
from protocol import serve  # noqa: E402


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("paddlelite")
    except Exception:            # the ARM module may be installed without package metadata
        return "unknown"


def load(header: dict):
    config = MobileConfig()
    config.set_model_from_file(header["path"])
    threads = int(header.get("threads", 0))
    threads_applied = threads > 0 and hasattr(config, "set_threads")
    if threads_applied:
        config.set_threads(threads)
    predictor = create_paddle_predictor(config)
    info = {
        "paddlelite": _version(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "inputs": list(predictor.get_input_names()),
        "outputs": list(predictor.get_output_names()),
        "threads_applied": threads_applied,
    }
    return predictor, info


def run(predictor, arrays: dict) -> list:
    for index, name in enumerate(predictor.get_input_names()):
        if name not in arrays:
            raise KeyError(f"input '{name}' was not given (got: {', '.join(arrays)})")
        predictor.get_input(index).from_numpy(np.ascontiguousarray(arrays[name]))
    predictor.run()
    # copies: the predictor reuses its output buffers on the next run
    return [np.array(predictor.get_output(i).numpy(), copy=True)
            for i in range(len(predictor.get_output_names()))]


if __name__ == "__main__":
    serve(load, run)
