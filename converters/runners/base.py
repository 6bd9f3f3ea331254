"""The contract of a runner: what an onnxruntime session offers the families, plus an honest description.

The families judge a candidate through `converters.latency.session(candidate)`, which returns a
Runner unchanged, so the same metric code judges an ONNX file here and an artifact run elsewhere.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from runtimes.errors import BackendError


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: list


class Runner(ABC):
    description: str = ""            # where and how it executes, e.g. "Paddle Lite 2.13rc0 x86 runtime"

    @abstractmethod
    def get_inputs(self) -> list[InputInfo]: ...

    @abstractmethod
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the model's order (`output_names` is accepted for session compatibility; None = all)."""

    def close(self) -> None:
        """Release the worker process, if any."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pick_outputs(outputs: list[np.ndarray], wanted: list[str] | None, names: list[str], model: str) -> list[np.ndarray]:
    """All outputs in the model's order, or the named ones; a name the model does not have is refused."""
    if wanted is None:
        return outputs
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise BackendError(f"{model} has no output(s) {', '.join(unknown)}")
    return [outputs[names.index(name)] for name in wanted]
