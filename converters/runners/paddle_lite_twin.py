"""An x86 `.nb` (the twin of an ARM `.nb`) executed in Paddle Lite's x86 runtime, for the families to judge.

It runs through the device's own Paddle Lite backend (runtimes/backends/paddle_lite.py: a worker
process under the toolchain's Python), so a native crash costs one error line, not the convert.
Only x86 `.nb` files belong here: the x86 runtime loads an ARM `.nb` and returns zeros or crashes.

Paddle Lite 2.13rc0's x86 runtime mishandles a predictor whose input shape changes (measured on
PP-OCRv4 det with real pages): a smaller input than before crashes it (SIGSEGV/SIGABRT), a larger one
runs and returns a wrong probability map (max |diff| 1.0 against a fresh predictor) without any
error; the same shape again is exact. The backend gives every change of input shape a fresh
predictor on x86 (runtimes.backends.paddle_lite.FRESH_PREDICTOR_PER_SHAPE); `restarts` counts them.

Feeds come keyed by the FP32 ONNX model's input names; paddle2onnx keeps the Paddle program's
names, and a single input is matched by position should they ever differ. Outputs come in the
program's fetch order, which is the ONNX model's output order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.bundle import RuntimeOptions
from runtimes.errors import ConversionError, EdgeError

from .base import InputInfo, Runner


class PaddleLiteTwinRunner(Runner):
    def __init__(self, nb: Path, threads: int = 1):
        try:
            from runtimes.backends.paddle_lite import PaddleLiteBackend
        except ImportError as err:      # no Python with paddlelite: the toolchain is not installed
            raise ConversionError(f"cannot run the x86 twin {nb.name}: {err}") from None
        self._open = lambda: PaddleLiteBackend(nb, RuntimeOptions(threads=threads))
        self.path = nb
        self.backend = self._start()
        info = self.backend.worker.info
        self.version = info.get("paddlelite", "unknown")
        self.description = (f"Paddle Lite {self.version} x86 runtime ({info.get('machine')}, worker process on "
                            f"Python {info.get('python')})")

    def _start(self):
        try:
            return self._open()
        except EdgeError as err:
            raise ConversionError(f"the x86 twin {self.path.name} does not load in Paddle Lite: {err}") from None

    def get_inputs(self) -> list[InputInfo]:
        return [InputInfo(name, []) for name in self.backend.input_names]

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = self.backend.input_names
        if set(names) != set(feeds) and len(names) == 1 and len(feeds) == 1:
            feeds = {names[0]: next(iter(feeds.values()))}
        try:
            outputs = self.backend.run(feeds)
        except EdgeError as err:
            raise ConversionError(f"x86 twin {self.path.name}: {err}") from None
        if output_names is not None and len(output_names) != len(outputs):
            raise ConversionError(f"x86 twin {self.path.name}: asked for {len(output_names)} named outputs; "
                                  "a twin returns all outputs in order")
        return outputs

    @property
    def restarts(self) -> int:
        return self.backend.reshapes

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"PaddleLiteTwinRunner({self.path})"
