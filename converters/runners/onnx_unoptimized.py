"""An ONNX model run exactly as written: onnxruntime CPU with every graph optimisation off.

For models whose point is their explicit operators, such as the FP16-rounded reference
(converters/passes/fp16_rounding.py): an optimiser must not fold its Cast pairs or fuse them away.
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..latency import session
from .base import InputInfo, Runner


class OnnxUnoptimizedRunner(Runner):
    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads, optimize=False)
        self.path = path
        self.description = f"onnxruntime {ort.__version__} CPU on {platform.machine()}, graph optimisations off"

    def get_inputs(self) -> list[InputInfo]:
        return [InputInfo(i.name, list(i.shape)) for i in self.session.get_inputs()]

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(output_names, feeds)

    def __repr__(self) -> str:
        return f"OnnxUnoptimizedRunner({self.path})"
