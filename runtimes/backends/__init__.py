"""Backend registry: artifact format -> backend class.

Each backend module is imported on its own; one whose library is missing on this machine is
left out with a log line (as Frigate does for its detector plugins) instead of breaking the rest.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ..bundle import RuntimeOptions
from ..errors import BackendError
from .base import Backend

log = logging.getLogger(__name__)

BACKEND_MODULES = {"onnx": "onnxruntime", "paddle_lite": "paddle_lite"}
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


def create_backend(artifact_format: str, path: Path, runtime: RuntimeOptions) -> Backend:
    if artifact_format in BACKENDS:
        return BACKENDS[artifact_format](path, runtime)
    if artifact_format in UNAVAILABLE:
        raise BackendError(f"cannot run a '{artifact_format}' artifact here: its runtime is not installed "
                           f"({UNAVAILABLE[artifact_format]})")
    raise BackendError(f"unknown artifact format '{artifact_format}' (known: {', '.join(BACKEND_MODULES)})")
