"""What a task family tells the converter: how to feed a model, and how to judge a candidate.

A family knows its task's pipeline (pre-processing, post-processing, how one model's output feeds
the next) and so can (a) turn images into realistic inputs for every role, for calibration and
latency, and (b) compare a candidate artifact (INT8, FP16) with the FP32 reference using the
task's own metric and budget.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtimes.errors import ConversionError

from ..spec import ModelSpec

Feeds = dict[str, np.ndarray]


@dataclass
class Evaluation:
    metric: str          # what was measured, e.g. "box_f1@0.5 vs fp32"
    value: float
    budget: float        # the bound the value must respect (>= for agreement metrics, <= for error rates)
    passed: bool
    samples: int         # how many boxes / lines / images the value is computed over
    lower_is_better: bool = False    # error rates (CER): the budget is an upper bound
    extras: dict[str, float] = field(default_factory=dict)   # further measurements the verdict also used

    def describe(self) -> str:
        relation = "<=" if self.lower_is_better else ">="
        verdict = "within" if self.passed else "misses"
        more = "".join(f", {name} {value:.4f}" for name, value in self.extras.items())
        return (f"{self.metric} {self.value:.4f}{more} {verdict} budget {relation} {self.budget:g} "
                f"({self.samples} samples)")

    @property
    def higher_is_better(self) -> bool:
        return not self.lower_is_better

    @property
    def rank(self) -> tuple[bool, float]:
        """Sort key, largest best: within budget first, then the more faithful value."""
        return self.passed, self.value if self.higher_is_better else -self.value


class Family(ABC):
    """One task's converter-side knowledge. Subclasses set `task` and are listed in FAMILIES."""

    task: str = ""
    roles: tuple[str, ...] = ()

    def __init__(self, specs: dict[str, ModelSpec], threads: int = 0):
        missing = [role for role in self.roles if role not in specs]
        if missing:
            raise ConversionError(f"{self.task}: no model given for role(s) {', '.join(missing)}")
        self.specs, self.threads = specs, threads

    def spec(self, role: str) -> ModelSpec:
        if role not in self.specs:
            raise ConversionError(f"{self.task}: unknown role '{role}' (known: {', '.join(self.specs)})")
        return self.specs[role]

    @abstractmethod
    def calibration_feeds(self, role: str, fp32: dict[str, Path], images: list[Path],
                          limit: int) -> list[Feeds]:
        """At most `limit` inputs for model `role`, made from `images` the way the pipeline would.

        `fp32` maps every role to its FP32 model, so that later stages (text-line recognizers)
        get the inputs that the FP32 earlier stages produce.
        """

    @abstractmethod
    def evaluate(self, role: str, fp32: dict[str, Path], candidate: Path, images: list[Path]) -> Evaluation:
        """Compare `candidate` (a replacement for fp32[role]) with fp32[role] on `images`."""

    def latency_feeds(self, role: str, fp32: dict[str, Path], images: list[Path], limit: int) -> list[Feeds]:
        """Inputs shaped like what a device runs (for timing); by default the calibration inputs."""
        return self.calibration_feeds(role, fp32, images, limit)
