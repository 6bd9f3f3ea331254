"""onnxruntime backend: the execution providers the bundle's runtime asks for (TensorRT, CUDA, CPU), as far
as this onnxruntime has them.

After the session is made, `providers_in_use` holds what really runs the model: `session.get_providers()`,
the providers the session registered, in priority order (each takes the nodes it can that the ones before
it did not take; which node went where, only onnxruntime's verbose log tells). One log line says so and
names what was asked for but is missing.

TensorRT keeps the engine it builds (minutes on a Jetson) in a cache folder. Relative cache paths in the
bundle's options are resolved under the daemon's state folder (`RunContext.state_dir`), else under the
user's cache folder (`runtimes.toolpaths.cache_root`), never the current directory; every model gets an
engine folder of its own, named after its bytes and the options that shape the engine, because
onnxruntime names engines after the graph and would hand one bundle's engine to another model whose
graph looks the same.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..bundle import Artifact, RuntimeOptions, sha256_of
from ..errors import BackendError
from ..run_context import RunContext
from ..toolpaths import cache_root
from .base import Backend

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"
ENGINE_CACHE_DEFAULT = "tensorrt/engines"     # under the state folder (or the user cache)
TIMING_CACHE_DEFAULT = "tensorrt/timing"      # one per device: it speeds up the builds of every model
CACHE_PATH_KEYS = ("trt_engine_cache_path", "trt_timing_cache_path")


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def _on(value: Any) -> bool:
    """A provider option's truth as onnxruntime reads it (YAML gives bools, hand-written JSON may give "1")."""
    return str(value).strip().lower() in ("1", "true")


# --- TensorRT options for one artifact ------------------------------------------------------------

def tensorrt_precision_options(options: dict[str, Any], precision: str | None) -> dict[str, Any]:
    """The profile's TensorRT flags narrowed to what one artifact is.

    An FP32 file runs in FP32 (it is the fallback when FP16 or INT8 missed its budget; TensorRT's FP16 flag
    would quietly make it an FP16 model). An FP16 file may use FP16 where the profile allows it. A QDQ INT8
    file needs trt_int8_enable: TensorRT refuses Q/DQ layers without it, and takes the scales from the Q/DQ
    nodes (explicit quantization), so no calibration table is given (TensorRT refuses one beside Q/DQ).
    `precision` None (artifact unknown) leaves the flags as the profile wrote them."""
    if precision is None:
        return dict(options)
    narrowed = {k: v for k, v in options.items() if k != "trt_int8_calibration_table_name"}
    narrowed["trt_int8_enable"] = precision == "int8"
    narrowed["trt_fp16_enable"] = precision != "fp32" and _on(options.get("trt_fp16_enable", False))
    return narrowed


def engine_folder_name(model: Path, sha256: str, options: dict[str, Any]) -> str:
    """`<file stem>-<content hash>-<options hash>`: a new model file or new engine-shaping options (precision
    flags, workspace) get a new folder instead of an engine built for something else."""
    shaping = {k: str(v) for k, v in sorted(options.items()) if k not in CACHE_PATH_KEYS}
    options_hash = hashlib.sha256(json.dumps(shaping).encode()).hexdigest()[:8]
    return f"{model.stem}-{sha256[:12]}-{options_hash}"


def _under(base: Path, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def tensorrt_cache_options(options: dict[str, Any], base: Path, folder_name: str) -> tuple[dict[str, Any], Path | None]:
    """The options with their cache paths resolved (relative ones under `base`) and the folders made; and the
    model's engine folder (None when engine caching is off). A cache that is off loses its path, so nothing
    relative reaches onnxruntime (which would read it from the current directory)."""
    resolved = {k: v for k, v in options.items() if k not in CACHE_PATH_KEYS}
    engine_dir = None
    if _on(options.get("trt_engine_cache_enable", False)):
        engine_dir = _under(base, options.get("trt_engine_cache_path") or ENGINE_CACHE_DEFAULT) / folder_name
        engine_dir.mkdir(parents=True, exist_ok=True)
        resolved["trt_engine_cache_path"] = str(engine_dir)
    if _on(options.get("trt_timing_cache_enable", False)):
        timing_dir = _under(base, options.get("trt_timing_cache_path") or TIMING_CACHE_DEFAULT)
        timing_dir.mkdir(parents=True, exist_ok=True)
        resolved["trt_timing_cache_path"] = str(timing_dir)
    return resolved, engine_dir


def has_cached_engine(engine_dir: Path | None) -> bool:
    return engine_dir is not None and engine_dir.is_dir() and any(engine_dir.glob("*.engine"))


# --- what runs, in words ------------------------------------------------------------------------

def builds_tensorrt_engine(providers_in_use: list[str], engine_cached: bool) -> bool:
    """True only when TensorRT really is among the session's providers and had no engine cached for this model
    before the session was made: then this start builds one."""
    return TENSORRT in providers_in_use and not engine_cached


def providers_report(name: str, requested: list[str], available: list[str], in_use: list[str]) -> str:
    """One line for the log: what runs `name`, and what was asked for but is not running it, and why."""
    line = f"{name}: runs on {in_use[0]}" if in_use else f"{name}: runs on no execution provider"
    if len(in_use) > 1:
        line += f" (then {', '.join(in_use[1:])} for the nodes it does not take)"
    missing = [p for p in requested if p not in available]
    unused = [p for p in requested if p in available and p not in in_use]
    notes = []
    if missing:
        notes.append(f"{', '.join(missing)} not available in this onnxruntime {ort.__version__}")
    if unused:
        notes.append(f"{', '.join(unused)} could not be used here (onnxruntime's messages above say why)")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def engine_build_message(name: str, engine_dir: Path | None) -> str:
    where = f"kept in {engine_dir} for later starts" if engine_dir else \
        "engine caching is off in the bundle, so every start builds it again"
    return f"{name}: building a TensorRT engine for this model (this takes minutes, once per device; {where})"


def engine_ready_message(name: str, session_s: float, first_run_s: float) -> str:
    return (f"{name}: TensorRT engine ready after {session_s + first_run_s:.1f} s "
            f"(session creation {session_s:.1f} s + first run {first_run_s:.1f} s)")


class OnnxRuntimeBackend(Backend):
    format = "onnx"
    concurrent = True       # InferenceSession.run is thread-safe

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None,
                 artifact: Artifact | None = None):
        super().__init__(path, runtime, context, artifact)
        available = ort.get_available_providers()
        requested = list(runtime.providers)
        options = runtime.provider_options or [{}] * len(requested)
        chosen = [(p, dict(o)) for p, o in zip(requested, options) if p in available] or [(CPU, {})]
        self.engine_dir: Path | None = None
        chosen = [(p, self.tensorrt_options(o) if p == TENSORRT else o) for p, o in chosen]
        engine_cached = has_cached_engine(self.engine_dir)
        if self.engine_dir is not None and not engine_cached:
            log.info("%s: no TensorRT engine cached for it yet; if TensorRT takes it, this start builds one, "
                     "which takes minutes", path.name)
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(runtime.threads),
                providers=[p for p, _ in chosen], provider_options=[o for _, o in chosen])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime cannot load {path.name}: {str(err).splitlines()[0]}") from None
        self.session_seconds = time.perf_counter() - started
        self.providers_in_use = list(self.session.get_providers())
        self._report(requested, available, engine_cached)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _report(self, requested: list[str], available: list[str], engine_cached: bool) -> None:
        # A Jetson whose onnxruntime lacks TensorRT runs on its CPU, far slower: say so louder than INFO.
        preferred = requested[0] if requested else CPU
        level = logging.INFO if self.providers_in_use[:1] == [preferred] else logging.WARNING
        log.log(level, "%s", providers_report(self.path.name, requested, available, self.providers_in_use))
        self._timing_first_run = builds_tensorrt_engine(self.providers_in_use, engine_cached)
        if self._timing_first_run:
            log.info("%s", engine_build_message(self.path.name, self.engine_dir))

    def tensorrt_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The bundle's TensorRT options made ready for this model: precision flags for its artifact, cache folders
        resolved and made (sets `engine_dir`)."""
        options = tensorrt_precision_options(options, self.artifact.precision if self.artifact else None)
        sha = self.artifact.sha256 if self.artifact else sha256_of(self.path)
        base = self.context.state_dir or cache_root()
        options, self.engine_dir = tensorrt_cache_options(options, Path(base),
                                                          engine_folder_name(self.path, sha, options))
        return options

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            outputs = self.session.run(self._outputs, feeds)
        except Exception as err:
            raise BackendError(f"onnxruntime failed on {self.path.name}: {str(err).splitlines()[0]}") from None
        if self._timing_first_run:      # TensorRT builds engines for dynamic shapes here, at the first run
            self._timing_first_run = False
            log.info("%s", engine_ready_message(self.path.name, self.session_seconds,
                                                time.perf_counter() - started))
        return outputs
