"""onnxruntime backend: CPU, CUDA and TensorRT execution providers, as the bundle's runtime says."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..bundle import RuntimeOptions
from ..errors import BackendError
from ..run_context import RunContext
from .base import Backend

log = logging.getLogger(__name__)


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeBackend(Backend):
    format = "onnx"

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None):
        super().__init__(path, runtime, context)
        available = set(ort.get_available_providers())
        wanted = list(zip(runtime.providers, runtime.provider_options or [{}] * len(runtime.providers)))
        chosen = [(p, o) for p, o in wanted if p in available]
        missing = [p for p, _ in wanted if p not in available]
        if missing:
            log.warning("execution providers not available here, skipped: %s", ", ".join(missing))
        if not chosen:
            chosen = [("CPUExecutionProvider", {})]
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(runtime.threads),
                providers=[p for p, _ in chosen], provider_options=[o for _, o in chosen])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime cannot load {path.name}: {str(err).splitlines()[0]}") from None
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(self._outputs, feeds)
        except Exception as err:
            raise BackendError(f"onnxruntime failed on {self.path.name}: {str(err).splitlines()[0]}") from None
