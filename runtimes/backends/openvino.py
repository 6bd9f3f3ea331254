"""OpenVINO backend for IR artifacts (`.xml` with its `.bin` beside it), on OpenVINO's CPU plugin.

The model is compiled once and ONE inference request is made and reused for every frame (creating a
request allocates its buffers). Compile properties come from three places, later ones winning:
  1. the bundle's `runtime.openvino` (copied from the profile: PERFORMANCE_HINT, NUM_STREAMS, ...);
  2. `runtime.threads` as INFERENCE_NUM_THREADS (0 leaves OpenVINO's default);
  3. the artifact's precision as INFERENCE_PRECISION_HINT. It is always set, because OpenVINO's default
     follows the CPU: on a CPU with AVX512-BF16 or AMX it computes float operators in bfloat16 unless told
     f32, which would quietly turn an FP32 artifact into a bf16 one. An INT8 IR (FakeQuantize nodes) runs its
     quantized operators in int8 whatever the hint; the hint (f32) covers the float remainder.
`providers_in_use` says what the compiled model reports back ("OpenVINO CPU (bf16)"), not what was asked.

Input shapes may change from call to call (OCR det pages, rec text lines of any width): a model compiled
with dynamic dimensions accepts any shape its dimensions allow, so nothing is recompiled per shape.
Without the `openvino` package this module raises ImportError at import, and runtimes.backends lists the
format as unavailable with how to install it.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Artifact, RuntimeOptions
from ..errors import BackendError
from ..run_context import RunContext
from .base import Backend

try:
    import openvino as ov
except ImportError as _missing:
    raise ImportError(f'OpenVINO is not installed ({_missing}); install it with: pip install "pp-edge[openvino]"') \
        from None

log = logging.getLogger(__name__)

DEVICE = "CPU"
# artifact precision -> INFERENCE_PRECISION_HINT, and the CPU capability (OPTIMIZATION_CAPABILITIES) it needs
PRECISION_HINTS = {"fp32": ("f32", None), "int8": ("f32", None), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
PRECISION_KEY = "INFERENCE_PRECISION_HINT"

_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """One OpenVINO Core per process (it loads the device plugins; OpenVINO advises sharing it)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def first_line(err: BaseException) -> str:
    """OpenVINO's message without its source-file trail: the last line that is not 'Exception from x.cpp'
    or "Check '...' failed at y.cpp" (those name OpenVINO's sources, not the user's problem)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return (said or lines or [type(err).__name__])[-1]


def precision_hint(precision: str | None, capabilities: list[str], name: str) -> str | None:
    """The INFERENCE_PRECISION_HINT for an artifact's precision on this CPU (None: no artifact, OpenVINO's
    default). bf16/fp16 on a CPU without it runs f32, with a warning: slower, but the same answers."""
    if precision is None:
        return None
    if precision not in PRECISION_HINTS:
        raise BackendError(f"{name}: OpenVINO cannot run a '{precision}' artifact "
                           f"(known: {', '.join(PRECISION_HINTS)})")
    hint, needs = PRECISION_HINTS[precision]
    if needs and needs not in capabilities:
        log.warning("%s: this CPU has no %s support (OpenVINO CPU capabilities: %s); running it in f32", name,
                    needs, ", ".join(capabilities) or "none")
        return "f32"
    return hint


def compile_config(runtime: RuntimeOptions, hint: str | None, name: str) -> dict[str, Any]:
    config = dict(runtime.openvino)
    if hint is not None and PRECISION_KEY in config:
        log.info("%s: the artifact's precision sets %s=%s, not the profile's %s", name, PRECISION_KEY, hint,
                 config[PRECISION_KEY])
    if runtime.threads > 0:
        config["INFERENCE_NUM_THREADS"] = runtime.threads
    if hint is not None:
        config[PRECISION_KEY] = hint
    return config


def read_ir(path: Path) -> ov.Model:
    """The IR at `path` and its weights file (same name, `.bin`). Naming the weights also keeps OpenVINO
    from offering a broken `.xml` to every other frontend it has (which prints their parse errors)."""
    weights = path.with_suffix(".bin")
    if not path.is_file():
        raise BackendError(f"OpenVINO cannot load {path.name}: no such file")
    if not weights.is_file():
        raise BackendError(f"OpenVINO cannot load {path.name}: its weights file {weights.name} is missing beside it")
    try:
        return core().read_model(str(path), str(weights))
    except Exception as err:  # OpenVINO raises bare RuntimeErrors
        raise BackendError(f"OpenVINO cannot read {path.name}: {first_line(err)}") from None


def port_name(port: Any, index: int, kind: str) -> str:
    names = port.get_names()
    return port.get_any_name() if names else f"{kind}{index}"


class OpenVinoBackend(Backend):
    format = "openvino"
    concurrent = True       # each calling thread borrows an infer request of its own (see run)

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None,
                 artifact: Artifact | None = None):
        super().__init__(path, runtime, context, artifact)
        model = read_ir(path)
        capabilities = list(core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
        hint = precision_hint(artifact.execution_precision if artifact else None, capabilities, path.name)
        config = compile_config(runtime, hint, path.name)
        try:
            self.compiled = core().compile_model(model, DEVICE, config)
            self._idle = [self.compiled.create_infer_request()]
        except Exception as err:
            raise BackendError(f"OpenVINO cannot compile {path.name} for {DEVICE}: {first_line(err)}") from None
        self.precision = self.compiled.get_property(PRECISION_KEY).get_type_name()   # "bf16", "f32"
        if hint is not None and self.precision != hint:
            log.warning("%s: asked OpenVINO for %s, it runs %s", path.name, hint, self.precision)
        self.providers_in_use = [f"OpenVINO {DEVICE} ({self.precision})"]
        self._inputs = [port_name(p, i, "input") for i, p in enumerate(self.compiled.inputs)]
        self._outputs = [port_name(p, i, "output") for i, p in enumerate(self.compiled.outputs)]
        self._dtypes = [p.get_element_type().to_dtype() for p in self.compiled.inputs]
        # Requests not in use. A request's buffers belong to one call at a time, so a thread borrows one (a
        # new one when all are busy: as many exist as frames were ever in flight at once) and gives it back.
        self._lock = threading.Lock()
        log.info("%s: runs on OpenVINO %s %s in %s (%s)", path.name, ov.get_version().split("-")[0], DEVICE,
                 self.precision, ", ".join(f"{k}={v}" for k, v in config.items()) or "OpenVINO's defaults")

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.require_inputs(feeds)
        # By position: every input is fed, in the compiled model's order, in its element type.
        arrays = {i: np.ascontiguousarray(feeds[name], dtype=dtype)
                  for i, (name, dtype) in enumerate(zip(self._inputs, self._dtypes))}
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            # share_inputs: read the arrays in place (they outlive this synchronous call); outputs are
            # copied out (share_outputs False), since the request's buffers are overwritten next call.
            result = request.infer(arrays, share_inputs=True)
            return [result[port] for port in self.compiled.outputs]
        except Exception as err:
            shapes = ", ".join(f"{n} {tuple(feeds[n].shape)}" for n in self._inputs)
            raise BackendError(f"OpenVINO failed on {self.path.name} ({shapes}): {first_line(err)}") from None
        finally:
            with self._lock:
                self._idle.append(request)
