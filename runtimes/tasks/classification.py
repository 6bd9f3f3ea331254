"""Image classification (PaddleClas / PaddleX exports: PP-LCNet, PULC models, ...).

PaddleClas exports end in softmax, and its Topk post-process reads the output as probabilities
as it is (no softmax of its own); so do we. Results are the `topk` best classes, best first.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bundle import Bundle, ModelEntry
from ..errors import BundleError
from ..run_context import RunContext
from .base import ModelRunner, Stopwatch, Task, TaskOutput, Timings

ROLE = "classifier"


class TopkParams(BaseModel):
    """The classifier's `postprocess` dict, as the manifest states it (from PostProcess.Topk)."""
    model_config = ConfigDict(extra="forbid")

    kind: Literal["topk"] = "topk"
    topk: int = Field(1, ge=1)


def topk_params(entry: ModelEntry) -> TopkParams:
    if entry.postprocess.get("kind") != "topk":
        raise BundleError(f"model '{entry.name}' ({entry.role}) has postprocess kind "
                          f"'{entry.postprocess.get('kind')}'; the classification task needs 'topk'")
    try:
        return TopkParams.model_validate(entry.postprocess)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.{field}: {first['msg']}") from None


def top_k(scores: np.ndarray, k: int, labels: list[str] | None) -> list[dict[str, Any]]:
    """One image's class scores (C,) -> [{"label", "score"}] for the k best, best first."""
    scores = np.asarray(scores, np.float32).reshape(-1)
    if labels and len(labels) != scores.size:
        raise BundleError(f"the classifier gives {scores.size} scores but the bundle names {len(labels)} "
                          "classes; the labels do not belong to this model")
    best = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i] if labels else str(int(i)), "score": round(float(scores[i]), 5)} for i in best]


class ClassificationTask(Task):
    name = "classification"

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        super().__init__(bundle, context)
        self.runner = ModelRunner(bundle, ROLE, self.context)
        self.params = topk_params(self.runner.entry)
        self.labels = self.runner.entry.labels

    def __call__(self, image: np.ndarray) -> TaskOutput:
        timings = Timings()
        watch = Stopwatch(timings)
        with watch("pre"):
            tensor, _ = self.runner.preprocess(image)
        with watch("infer"):
            scores = self.runner.infer(tensor)[0]
        with watch("post"):
            results = top_k(scores[0], self.params.topk, self.labels)
        return TaskOutput(results=results, timings=timings)
