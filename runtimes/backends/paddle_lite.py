"""Paddle Lite backend for `.nb` artifacts (ARM CPU, x86, OpenCL).

`paddlelite` exists only where the device's wheel is installed; elsewhere this module is skipped
at registration time with a log line, so x86 hosts never break on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from paddlelite.lite import MobileConfig, create_paddle_predictor  # noqa: F401  (ImportError is expected off-device)

from ..bundle import RuntimeOptions
from ..errors import BackendError
from .base import Backend


class PaddleLiteBackend(Backend):
    format = "paddle_lite"

    def __init__(self, path: Path, runtime: RuntimeOptions):
        super().__init__(path, runtime)
        config = MobileConfig()
        config.set_model_from_file(str(path))
        if runtime.threads > 0:
            config.set_threads(runtime.threads)
        try:
            self.predictor = create_paddle_predictor(config)
        except Exception as err:
            raise BackendError(f"Paddle Lite cannot load {path.name}: {err}") from None

    @property
    def input_names(self) -> list[str]:
        return list(self.predictor.get_input_names())

    @property
    def output_names(self) -> list[str]:
        return list(self.predictor.get_output_names())

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for index, name in enumerate(self.input_names):
            self.predictor.get_input(index).from_numpy(np.ascontiguousarray(feeds[name]))
        self.predictor.run()
        return [self.predictor.get_output(i).numpy() for i in range(len(self.output_names))]
