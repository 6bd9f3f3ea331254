"""The contract every inference backend fulfils: load one artifact, run named inputs."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..bundle import RuntimeOptions
from ..run_context import RunContext


class Backend(ABC):
    """Runs one model artifact. Subclasses register themselves by artifact format."""

    format: str = ""

    def __init__(self, path: Path, runtime: RuntimeOptions, context: RunContext | None = None):
        self.path, self.runtime = path, runtime
        self.context = context or RunContext()

    @property
    @abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the model's output order."""
