"""An OpenVINO model (IR `.xml`, or any file OpenVINO reads) executed by OpenVINO's CPU plugin in this process.

Used to judge and time OpenVINO artifacts as a device runs them (runtimes/backends/openvino.py): one
compiled model, one inference request created once and reused; compile properties from the profile's
`runtime.openvino` (PERFORMANCE_HINT, ...), then the thread count, then the artifact's precision as
INFERENCE_PRECISION_HINT, later ones winning, as the backend does. The precision is always set because
OpenVINO's own default follows the CPU: on a CPU with AVX512-BF16 or AMX it computes float operators in
bfloat16 unless told `f32` (measured: the property reads `bf16` by default on this host, which has both).
The description says what the compiled model reports back, not what was asked for.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from .base import InputInfo, Runner, pick_outputs

# artifact precision -> OpenVINO INFERENCE_PRECISION_HINT (int8 IRs run their float remainder in f32)
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


def openvino_version() -> str:
    import openvino as ov
    return ov.get_version().split("-")[0]


def compile_config(threads: int, hint: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = dict(properties or {})
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    config["INFERENCE_PRECISION_HINT"] = hint
    return config


class OpenVinoRunner(Runner):
    """`model`: a path OpenVINO reads (.xml with its .bin, .onnx), an openvino.Model in memory, or a model
    someone else compiled (NNCF's accuracy control), run as it was compiled;
    `precision`: the artifact's (fp32 / bf16 / int8), or an OpenVINO hint itself (f32 / bf16);
    `properties`: the profile's OpenVINO properties (RuntimeOptions.openvino)."""

    def __init__(self, model: Path | str | Any, threads: int = 1, precision: str = "fp32",
                 properties: dict[str, Any] | None = None):
        import openvino as ov
        self.model = model
        if isinstance(model, ov.CompiledModel):
            self.compiled = model
        else:
            source = str(model) if isinstance(model, (str, Path)) else model
            config = compile_config(threads, PRECISION_HINTS.get(precision, precision), properties)
            self.compiled = ov.Core().compile_model(source, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [next(iter(sorted(o.get_names())), f"output{i}")
                             for i, o in enumerate(self.compiled.outputs)]
        self.inputs = [InputInfo(i.get_any_name(), [d.get_length() if d.is_static else None
                                                    for d in i.get_partial_shape()])
                       for i in self.compiled.inputs]
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.hint = str(self.compiled.get_property("PERFORMANCE_HINT"))
        self.description = (f"OpenVINO {openvino_version()} CPU on {platform.machine()}, {self.precision} "
                            f"execution, {self.threads} thread(s), {self.hint} hint")

    def get_inputs(self) -> list[InputInfo]:
        return self.inputs

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # share_outputs=False: the request is reused, so its output buffers are copied out
        result = self.request.infer(feeds, share_inputs=False, share_outputs=False)
        outputs = [np.asarray(result[port]) for port in self.compiled.outputs]
        return pick_outputs(outputs, output_names, self.output_names, str(getattr(self.model, "name", self.model)))

    def __repr__(self) -> str:
        return f"OpenVinoRunner({self.model}, {self.description})"
