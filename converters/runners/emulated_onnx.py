"""An ONNX artifact executed by the aarch64 onnxruntime wheel under qemu-aarch64 user emulation.

This is the ARM build of onnxruntime (its NEON / dot-product kernels, the integer paths a Raspberry
Pi takes), on a chosen CPU model, on this x86_64 host: it shows what the device *computes*, not how
fast (emulated FP32 runs 60-480x slower than this host natively, measured). One worker process per
runner: start it once and push every feed through it (start-up, mostly importing onnxruntime under
emulation, costs ~2 CPU-s). One emulated thread is the default: two made every model tried slower
or no faster under qemu-user. The emulated root is the `arm-emulator` toolchain.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from runtimes.errors import BackendError
from runtimes.workers.client import WORKER_DIR, WorkerProcess

from ..toolchains.arm_emulator import emulated_python, ready_info
from .base import InputInfo, Runner, pick_outputs

WORKER = WORKER_DIR / "onnx_worker.py"
START_TIMEOUT, CALL_TIMEOUT = 300.0, 900.0      # an OCR page takes about a minute emulated


class EmulatedOnnxRunner(Runner):
    def __init__(self, model_path: Path | str, cpu: str = "cortex-a72", threads: int = 1):
        self.model_path, self.cpu, self.threads = Path(model_path).resolve(), cpu, threads
        prefix, env = emulated_python(cpu)
        tool = ready_info()
        self._worker = WorkerProcess([*prefix, str(WORKER)], {"path": str(self.model_path), "threads": threads},
                                     f"emulated aarch64 onnxruntime (-cpu {cpu})", env,
                                     start_timeout=START_TIMEOUT, call_timeout=CALL_TIMEOUT)
        started = time.monotonic()
        info = self._worker.start()
        self.startup_seconds = time.monotonic() - started
        if info.get("machine") != "aarch64":     # the proof that it is not the host's build that answered
            self._worker.close()
            raise BackendError(f"the emulated worker reports machine '{info.get('machine')}', not aarch64")
        self.inputs = [InputInfo(i["name"], i["shape"]) for i in info["inputs"]]
        self.output_names: list[str] = info["outputs"]
        self.calls, self.run_seconds = 0, 0.0
        qemu = tool.get("qemu", "qemu-aarch64").split(" (")[0]
        # first clause up to the comma is the short form the manifest reasons quote
        self.description = (f"onnxruntime {info['onnxruntime']} aarch64 wheel on CPython {info['python']} under "
                            f"{qemu} user emulation, -cpu {cpu}, {threads} thread{'s' * (threads != 1)}, on an "
                            f"{platform.machine()} host")

    def get_inputs(self) -> list[InputInfo]:
        return self.inputs

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        started = time.monotonic()
        outputs = self._worker.call({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        self.run_seconds += time.monotonic() - started
        self.calls += 1
        return pick_outputs(outputs, output_names, self.output_names, self.model_path.name)

    def close(self) -> None:
        self._worker.close()
