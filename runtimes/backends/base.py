"""The contract every inference backend fulfils: load one artifact, run named inputs."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..bundle import Artifact, RuntimeOptions
from ..errors import BackendError
from ..run_context import RunContext


class Backend(ABC):
    """Runs one model artifact. Subclasses register themselves by artifact format."""

    format: str = ""
    # run() may be called from several threads at once (the daemon's frames in flight): onnxruntime's
    # session.run is; a backend that talks to one worker process is not.
    concurrent: bool = False

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None,
                 artifact: Artifact | None = None):
        # `artifact` is the bundle's record of the file (precision, sha256), when it was opened from a bundle.
        self.path, self.runtime, self.artifact = path, runtime, artifact
        self.context = context or RunContext()
        # What really runs the model, as the backend reports it after loading (for logs, status and metrics).
        self.providers_in_use: list[str] = []
        # The model's input and output names, in its order: set by the subclass once the file is loaded.
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def require_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        """One clear line, rather than the runtime's own error, when a feed lacks one of the model's inputs."""
        missing = [name for name in self._inputs if name not in feeds]
        if missing:
            raise BackendError(f"{self.path.name}: input {', '.join(missing)} not given")

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the model's output order."""
