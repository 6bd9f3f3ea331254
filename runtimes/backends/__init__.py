"""Backend registry: artifact format -> backend class.

Each backend module is imported on its own; one whose library is missing on this machine is
left out with a log line (as Frigate does for its detector plugins) instead of breaking the rest.
"""
from __future__ import annotations

import importlib
import logging
import platform
from pathlib import Path

from ..bundle import Artifact, Bundle, RuntimeOptions
from ..errors import BackendError
from ..run_context import RunContext
from .base import Backend

log = logging.getLogger(__name__)

BACKEND_MODULES = {"onnx": "onnxruntime", "paddle_lite": "paddle_lite", "openvino": "openvino"}
BACKENDS: dict[str, type[Backend]] = {}
UNAVAILABLE: dict[str, str] = {}

for _format, _module in BACKEND_MODULES.items():
    try:
        _mod = importlib.import_module(f"{__name__}.{_module}")
    except ImportError as _err:
        UNAVAILABLE[_format] = str(_err)
        log.debug("backend %s unavailable: %s", _format, _err)
        continue
    for _obj in vars(_mod).values():
        if isinstance(_obj, type) and issubclass(_obj, Backend) and _obj.format == _format:
            BACKENDS[_format] = _obj


def create_backend(artifact_format: str, path: Path, runtime: RuntimeOptions,
                   context: RunContext | None = None, artifact: Artifact | None = None) -> Backend:
    if artifact_format in BACKENDS:
        return BACKENDS[artifact_format](path, runtime, context, artifact)
    if artifact_format in UNAVAILABLE:
        raise BackendError(f"cannot run a '{artifact_format}' artifact here: its runtime is not installed "
                           f"({UNAVAILABLE[artifact_format]})")
    raise BackendError(f"unknown artifact format '{artifact_format}' (known: {', '.join(BACKEND_MODULES)})")


# Formats whose files are compiled for one CPU architecture: Paddle Lite's x86 runtime loads an ARM
# `.nb` without complaint and then returns zeros or crashes, so such a file is never tried elsewhere.
ARCH_SPECIFIC_FORMATS = {"paddle_lite"}


def this_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def why_not_loadable(artifact: Artifact) -> str | None:
    """None when this machine can load the artifact; else the reason, for logs and `edge inspect`."""
    if artifact.format in UNAVAILABLE:
        return f"its runtime ({artifact.backend}) is not installed here: {UNAVAILABLE[artifact.format]}"
    if artifact.format not in BACKENDS:
        return f"no backend for format '{artifact.format}' in this edge"
    if artifact.format in ARCH_SPECIFIC_FORMATS and artifact.target != this_arch():
        return f"it is compiled for {artifact.target}, this machine is {this_arch()}"
    return None


def open_artifact(bundle: Bundle, role: str, context: RunContext | None = None) -> tuple[Artifact, Backend]:
    """The artifact this device chose for `role` (its `edge bench` record, in `context`), else the bundle's
    selected one, else the first listed one this machine can load.

    The manifest lists a model's artifacts in the profile's order of preference, so falling back in
    that order keeps the converter's ranking; each skipped artifact is logged with its reason."""
    context = context or RunContext()
    entry = bundle.manifest.model(role)
    chosen = entry.selected_artifact()
    preferred = [a for a in entry.artifacts if a.path == context.prefer.get(role)]
    if context.prefer.get(role) and not preferred:
        log.warning("%s: the recorded choice %s is not in this bundle; using the bundle's order", role,
                    context.prefer[role])
    order = preferred + [chosen] + [a for a in entry.artifacts if a.path != chosen.path]
    order = [a for i, a in enumerate(order) if a.path not in {b.path for b in order[:i]}]
    reasons = []
    for artifact in order:
        why = why_not_loadable(artifact)
        if why is None:
            if reasons:
                log.info("%s: runs %s (%s %s) instead: %s", role, artifact.path, artifact.format,
                         artifact.precision, "; ".join(reasons))
            return artifact, create_backend(artifact.format, bundle.path_of(artifact.path),
                                            bundle.manifest.runtime, context, artifact)
        reasons.append(f"{artifact.path} skipped: {why}")
        log.info("%s: %s skipped: %s", role, artifact.path, why)
    raise BackendError(f"model '{role}': no artifact of this bundle loads here ({'; '.join(reasons)})")
