"""What every task pipeline offers: built from a bundle, called on a BGR image, returns typed results."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends import open_artifact
from ..bundle import Bundle, ModelEntry
from ..run_context import RunContext
from .preprocess import Preprocess


@dataclass
class Timings:
    """Milliseconds spent per stage; a pipeline of several models sums its models' stages."""
    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"pre": round(self.pre, 3), "infer": round(self.infer, 3), "post": round(self.post, 3)}


class Stopwatch:
    """`with watch("pre"): ...` adds the elapsed milliseconds to timings.pre."""

    def __init__(self, timings: Timings):
        self.timings = timings

    def __call__(self, stage: str) -> "Stopwatch":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        elapsed = (time.perf_counter() - self._start) * 1000.0
        setattr(self.timings, self._stage, getattr(self.timings, self._stage) + elapsed)


@dataclass
class TaskOutput:
    results: list[dict[str, Any]]
    timings: Timings = field(default_factory=Timings)


class ModelRunner:
    """One model of a bundle: its pre-processing chain and its backend, ready to run."""

    def __init__(self, bundle: Bundle, role: str, context: RunContext | None = None):
        self.role = role
        self.entry: ModelEntry = bundle.manifest.model(role)
        self.artifact, self.backend = open_artifact(bundle, role, context or RunContext())
        self.preprocess = Preprocess(self.entry.preprocess)
        self.input_name = self.backend.input_names[0]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.backend.run({self.input_name: batch})


class Task(ABC):
    """A task pipeline. Subclasses set `name` and are listed in `runtimes.tasks.TASKS`."""

    name: str = ""

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        self.bundle = bundle
        self.context = context or RunContext()

    @abstractmethod
    def __call__(self, image: np.ndarray) -> TaskOutput:
        """BGR uint8 HxWx3 image -> results in original-image pixels."""

    @property
    def models(self) -> list[str]:
        return [m.name for m in self.bundle.manifest.models]

    @property
    def concurrent(self) -> bool:
        """Whether several frames may run through this task at once (the daemon's `in_flight`): every backend
        it opened takes calls from several threads. Tasks keep no state between frames."""
        return all(runner.backend.concurrent for runner in self.runners().values())

    def runners(self) -> dict[str, ModelRunner]:
        """The models this task opened, by role, in the manifest's order (an optional model it did not
        open, e.g. OCR's angle classifier, is absent): what status and metrics report per model."""
        opened = {value.role: value for value in vars(self).values() if isinstance(value, ModelRunner)}
        return {m.role: opened[m.role] for m in self.bundle.manifest.models if m.role in opened}
