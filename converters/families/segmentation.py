"""Semantic segmentation at conversion time: whole pictures in, class masks judged against FP32.

Inputs are made as the device makes them (the segmenter's manifest pre-processing, the same
`label_map` post-processing as runtimes.tasks.segmentation). The model sees every picture resized
to one fixed size, so other *scales* of a picture would give almost the same tensor; calibration
therefore uses other *views* of the pictures instead — mirrored, and a centred 3/4 crop — and
evaluation the pictures themselves, so no calibration tensor is an evaluation tensor.

Metric: mask IoU of every non-background class found by either model, per picture, against the
FP32 model's masks at the original picture size; the value is the mean over (picture, class).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess
from runtimes.tasks.segmentation import SegParams, label_map

from ..latency import session
from ..metrics import mask_iou
from .base import Evaluation, Family, Feeds

BUDGET = 0.97        # mean mask IoU vs fp32 >=
METRIC = "mask_iou vs fp32"
CROP = 0.75          # side of the centred calibration crop, relative to the picture


def _calibration_views(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * CROP)), max(1, round(w * CROP))
    top, left = (h - ch) // 2, (w - cw) // 2
    return [cv2.flip(image, 1), np.ascontiguousarray(image[top:top + ch, left:left + cw])]


class SegmentationFamily(Family):
    task = "segmentation"
    roles = ("segmenter",)

    def __init__(self, specs, threads: int = 0):
        super().__init__(specs, threads)
        spec = self.spec("segmenter")
        self.pre = Preprocess(spec.preprocess)
        self.params = SegParams.model_validate(spec.postprocess)
        self.input_name = spec.input.name
        self._cache: dict[tuple, object] = {}

    def _views(self, images: list[Path], purpose: str) -> list[np.ndarray]:
        pictures = [read_image(p) for p in images]
        if purpose == "evaluation":
            return pictures
        return [view for picture in pictures for view in _calibration_views(picture)]

    def _feeds(self, images: list[Path], purpose: str) -> list[tuple[Feeds, object]]:
        key = ("feeds", tuple(images), purpose)
        if key not in self._cache:
            framed = []
            for view in self._views(images, purpose):
                tensor, frame = self.pre(view)
                framed.append(({self.input_name: tensor}, frame))
            self._cache[key] = framed
        return self._cache[key]

    @staticmethod
    def _spread(feeds: list[Feeds], limit: int) -> list[Feeds]:
        if len(feeds) > limit:   # spread the picks over all pictures instead of taking the first ones
            feeds = [feeds[i] for i in np.linspace(0, len(feeds) - 1, limit).round().astype(int)]
        return feeds

    def calibration_feeds(self, role, fp32, images, limit):
        self.spec(role)
        return self._spread([feed for feed, _ in self._feeds(images, "calibration")], limit)

    def latency_feeds(self, role, fp32, images, limit):
        self.spec(role)
        return self._spread([feed for feed, _ in self._feeds(images, "evaluation")], limit)

    def _label_maps(self, model: Path, images: list[Path]) -> list[np.ndarray]:
        sess = session(model, self.threads)
        maps = []
        for feed, frame in self._feeds(images, "evaluation"):
            output = sess.run(None, feed)[0]
            maps.append(label_map(output[0], frame, feed[self.input_name].shape[-2:], self.params))
        return maps

    def evaluate(self, role, fp32, candidate, images):
        self.spec(role)
        key = ("reference", str(fp32[role]), tuple(images))
        if key not in self._cache:
            self._cache[key] = self._label_maps(fp32[role], images)
        ious = []
        for got, ref in zip(self._label_maps(candidate, images), self._cache[key]):
            classes = set(np.unique(got).tolist()) | set(np.unique(ref).tolist())
            classes.discard(self.params.background)
            ious += [mask_iou(got == c, ref == c) for c in sorted(classes)]
        value = float(np.mean(ious)) if ious else 1.0
        return Evaluation(METRIC, value, BUDGET, value >= BUDGET, len(ious))
