"""Object detection at conversion time: pictures through the detector's own pre-processing, and a
candidate judged by the boxes a user would see, against the FP32 model's boxes.

With only a handful of real pictures, calibration and evaluation never see the same tensor:
calibration sees *altered views* of each picture (mirrored, and crops of 80% that the resize
enlarges differently), evaluation sees the pictures as a device would and their centred 80% crop
(see VIEWS): twice the boxes, because box F1 over a few dozen boxes near the score threshold moves
by 0.03 when one box flips. Give disjoint image lists when you have them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from runtimes.image import read_image
from runtimes.tasks.detection import DetectionParams, decode_detections, detector_feeds
from runtimes.tasks.preprocess import Preprocess

from ..latency import session
from ..metrics import BoxMatch, match_boxes
from .base import Evaluation, Family, Feeds

CROP = 0.8     # crops keep this share of each side


def _crop(image: np.ndarray, anchor_x: float, anchor_y: float) -> np.ndarray:
    """The CROP x CROP part of the picture placed at (anchor_x, anchor_y) in [0, 1] of the free room."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * CROP)), max(1, round(w * CROP))
    top, left = round((h - ch) * anchor_y), round((w - cw) * anchor_x)
    return image[top:top + ch, left:left + cw]


# view step name -> picture transform; a view is a sequence of steps applied in order
VIEW_STEPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda im: im,
    "mirror": lambda im: cv2.flip(im, 1),
    "crop_center": lambda im: _crop(im, 0.5, 0.5),
    "crop_top_left": lambda im: _crop(im, 0.0, 0.0),
    "crop_bottom_right": lambda im: _crop(im, 1.0, 1.0),
    "rotate_90": lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    "rotate_180": lambda im: cv2.rotate(im, cv2.ROTATE_180),
    "rotate_270": lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def make_views(images: list[Path], views: tuple[tuple[str, ...], ...]) -> list[np.ndarray]:
    """Every picture in every view, picture by picture."""
    made = []
    for path in images:
        image = read_image(path)
        for steps in views:
            view = image
            for step in steps:
                view = VIEW_STEPS[step](view)
            made.append(np.ascontiguousarray(view))
    return made


def spread(items: list, limit: int) -> list:
    """At most `limit` items picked evenly over the list (all pictures, not the first few)."""
    if len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


VIEWS = {"calibration": (("mirror",), ("crop_top_left",), ("crop_bottom_right", "mirror")),
         "evaluation": (("original",), ("crop_center",))}
BUDGET = 0.95          # box F1 at IoU 0.5, same label, against the FP32 model's boxes
METRIC = "box_f1@0.5 vs fp32"


class DetectionFamily(Family):
    task = "detection"
    roles = ("detector",)

    def __init__(self, specs, threads: int = 0):
        super().__init__(specs, threads)
        spec = self.spec("detector")
        self.pre = Preprocess(spec.preprocess)
        self.params = DetectionParams.model_validate(spec.postprocess)
        self.labels = spec.labels
        self._cache: dict[tuple, object] = {}

    def _feeds(self, model: Path, images: list[Path], purpose: str) -> list[tuple[Feeds, object]]:
        """(feeds, frame) per view; input names come from the model (some exports also take
        scale_factor / im_shape), and a candidate has the same inputs as its FP32 model."""
        names_key = ("inputs", str(model))
        if names_key not in self._cache:
            self._cache[names_key] = [i.name for i in session(model, self.threads).get_inputs()]
        key = ("feeds", tuple(self._cache[names_key]), tuple(images), purpose)
        if key not in self._cache:
            feeds = []
            for view in make_views(images, VIEWS[purpose]):
                tensor, frame = self.pre(view)
                feeds.append((detector_feeds(self._cache[names_key], tensor), frame))
            self._cache[key] = feeds
        return self._cache[key]

    def calibration_feeds(self, role, fp32, images, limit):
        self.spec(role)
        return spread([feed for feed, _ in self._feeds(fp32[role], images, "calibration")], limit)

    def latency_feeds(self, role, fp32, images, limit):
        """The pictures as the device sees them."""
        self.spec(role)
        return spread([feed for feed, _ in self._feeds(fp32[role], images, "evaluation")], limit)

    def _detections(self, model: Path, feeds: list[tuple[Feeds, object]]) -> list[list[dict]]:
        sess = session(model, self.threads)
        found = []
        for feed, frame in feeds:
            image = next(v for v in feed.values() if v.ndim == 4)
            found.append(decode_detections(sess.run(None, feed), frame, image.shape[2:], self.params, self.labels))
        return found

    def evaluate(self, role, fp32, candidate, images):
        """Boxes a user would see (above draw_threshold) from the candidate vs from FP32."""
        self.spec(role)
        feeds = self._feeds(fp32[role], images, "evaluation")
        key = ("reference", str(fp32[role]), tuple(images))
        if key not in self._cache:
            self._cache[key] = self._detections(fp32[role], feeds)
        total = BoxMatch()
        for got, ref in zip(self._detections(candidate, feeds), self._cache[key]):
            total = total + match_boxes([d["box"] for d in got], [d["box"] for d in ref], 0.5,
                                        [d["label"] for d in got], [d["label"] for d in ref])
        samples = total.tp + total.fn
        # with no reference box at all the F1 of 1.0 proves nothing: refuse rather than accept blind
        return Evaluation(METRIC, total.f1, BUDGET, samples > 0 and total.f1 >= BUDGET, samples)
