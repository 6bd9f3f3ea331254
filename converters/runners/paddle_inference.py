"""A Paddle program executed by Paddle Inference on this host's CPU, in a worker process.

What it is for: an INT8 `.nb` for ARM cannot be executed here (no ARM CPU; Paddle Lite's x86
runtime segfaults on INT8 `.nb` files), but the quantized Paddle program it is made from can:
Paddle Inference runs its quantize_linear / dequantize_linear ops as written, in float (a
simulation of the integer arithmetic, not the ARM kernels). The worker
(converters/paddle_infer_worker.py) imports paddle, so the parent never does; one worker per
runner, every feed pushed through it.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from runtimes.workers.client import WorkerProcess

from .base import InputInfo, Runner, pick_outputs

WORKER = Path(__file__).resolve().parents[1] / "paddle_infer_worker.py"
START_TIMEOUT, CALL_TIMEOUT = 300.0, 600.0


def worker_env(threads: int) -> dict[str, str]:
    return {"GLOG_minloglevel": "2", "FLAGS_call_stack_level": "0", "OMP_NUM_THREADS": str(max(1, threads))}


class PaddleInferenceRunner(Runner):
    """`session`: a worker already running that serves an "open" command (the Paddle PTQ search's session,
    converters/paddle_ptq_worker.py serve): the program is opened there instead of in a new process, and
    close() leaves that worker running."""

    def __init__(self, model_file: Path | str, params_file: Path | str, threads: int = 1,
                 session: WorkerProcess | None = None):
        self.model_file, self.params_file = Path(model_file).resolve(), Path(params_file).resolve()
        load = {"model": str(self.model_file), "params": str(self.params_file), "threads": threads}
        self._owned = session is None
        if session is None:
            self._worker = WorkerProcess([sys.executable, str(WORKER)], load,
                                         f"Paddle Inference ({self.model_file.name})", worker_env(threads),
                                         start_timeout=START_TIMEOUT, call_timeout=CALL_TIMEOUT)
            info = self._worker.start()
        else:
            self._worker = session
            info = session.command("open", **load)
        self.paddle_version: str = info["paddle"]
        self.quant_ops: int = info["quant_ops"]
        self.inputs = [InputInfo(i["name"], i["shape"]) for i in info["inputs"]]
        self.output_names: list[str] = info["outputs"]
        self.calls, self.run_seconds = 0, 0.0
        simulated = (f", {self.quant_ops} quantize/dequantize ops simulated in float" if self.quant_ops else "")
        self.description = (f"Paddle Inference {self.paddle_version} CPU on {info['machine']} (oneDNN and IR "
                            f"passes off, {threads} thread(s)){simulated}")

    def get_inputs(self) -> list[InputInfo]:
        return self.inputs

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the program's order; Paddle's output names differ from the ONNX twin's, so names
        other than the program's own are refused rather than guessed."""
        started = time.monotonic()
        outputs = self._worker.call({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        self.run_seconds += time.monotonic() - started
        self.calls += 1
        return pick_outputs(outputs, output_names, self.output_names, self.model_file.name)

    def close(self) -> None:
        if self._owned:
            self._worker.close()


def host_threads(threads: int) -> int:
    """The threads a judging run may use here (0: all cores)."""
    return max(1, min(threads or os.cpu_count() or 1, os.cpu_count() or 1))
