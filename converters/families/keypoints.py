"""Top-down keypoints at conversion time: the person detector, then the pose model on its persons.

The detector is judged as the detection family judges it (its boxes vs FP32's). The pose model
sees what it sees on a device: the persons that the *FP32* detector finds, grown and warped as
runtimes.tasks.keypoints does, through the pose model's manifest pre-processing, one person per
input (the batch size the exports fix). Calibration uses the detection family's altered views of
the pictures (mirrored, crops), evaluation the pictures themselves, so no calibration crop is an
evaluation crop.

Metric: PCK@0.05 — the share of joints that the candidate puts within 5% of the person box's
diagonal of where FP32 puts them, after the full decoding (argmax + DARK, back to picture pixels).
Only joints that FP32 itself reports above the pose model's draw_threshold count: the others are
guesses (occluded, outside the picture) that no user is shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtimes.tasks import heatmap
from runtimes.tasks.detection import DetectionParams, decode_detections, detector_feeds
from runtimes.tasks.keypoints import PoseInput, pose_params, select_persons

from ..latency import session
from ..metrics import pck
from .base import Evaluation, Family, Feeds
from .detection import VIEWS, DetectionFamily, make_views, spread

BUDGET = 0.95          # PCK@0.05 vs fp32 >=
ALPHA = 0.05           # share of the person box diagonal a joint may move
METRIC = "pck@0.05 vs fp32"


@dataclass
class PersonCrops:
    """The pose model's inputs for the persons found on some pictures, and how to map them back."""
    feeds: list[Feeds]          # one person each
    centres: np.ndarray         # (N, 2) grown-box centres, picture pixels
    sizes: np.ndarray           # (N, 2) grown-box sizes
    diagonals: np.ndarray       # (N,) detector box diagonals: PCK's yardstick


class KeypointsFamily(Family):
    task = "keypoints"
    roles = ("detector", "pose")

    def __init__(self, specs, threads: int = 0):
        super().__init__(specs, threads)
        self.detection = DetectionFamily({"detector": self.spec("detector")}, threads)
        self.det_params = DetectionParams.model_validate(self.spec("detector").postprocess)
        pose = self.spec("pose")
        self.params = pose_params(pose)
        self.pose_input = PoseInput(pose, self.params)
        self.input_name = pose.input.name
        self._cache: dict[tuple, object] = {}

    def _crops(self, detector: Path, images: list[Path], purpose: str) -> PersonCrops:
        key = ("crops", str(detector), tuple(images), purpose)
        if key not in self._cache:
            sess = session(detector, self.threads)
            names = [i.name for i in sess.get_inputs()]
            feeds, centres, sizes, diagonals = [], [], [], []
            for view in make_views(images, VIEWS[purpose]):
                tensor, frame = self.detection.pre(view)
                found = decode_detections(sess.run(None, detector_feeds(names, tensor)), frame, tensor.shape[2:],
                                          self.det_params, self.spec("detector").labels)
                boxes = [p["box"] for p in select_persons(found, self.params)]
                crops, view_centres, view_sizes = self.pose_input.crops(view, boxes)
                feeds += [{self.input_name: self.pose_input.tensor([crop])} for crop in crops]
                centres += list(view_centres)
                sizes += list(view_sizes)
                diagonals += [float(np.hypot(b[2] - b[0], b[3] - b[1])) for b in boxes]
            self._cache[key] = PersonCrops(feeds, np.asarray(centres).reshape(-1, 2),
                                           np.asarray(sizes).reshape(-1, 2), np.asarray(diagonals))
        return self._cache[key]

    def calibration_feeds(self, role, fp32, images, limit):
        if role == "detector":
            return self.detection.calibration_feeds(role, fp32, images, limit)
        self.spec(role)
        return spread(self._crops(fp32["detector"], images, "calibration").feeds, limit)

    def latency_feeds(self, role, fp32, images, limit):
        if role == "detector":
            return self.detection.latency_feeds(role, fp32, images, limit)
        self.spec(role)
        return spread(self._crops(fp32["detector"], images, "evaluation").feeds, limit)

    def _keypoints(self, model: Path, crops: PersonCrops) -> tuple[np.ndarray, np.ndarray]:
        if not crops.feeds:
            return np.zeros((0, 0, 2)), np.zeros((0, 0))
        sess = session(model, self.threads)
        maps = np.concatenate([sess.run(None, feed)[0] for feed in crops.feeds])
        return heatmap.decode(maps, crops.centres, crops.sizes, self.params.use_dark, self.params.blur_kernel)

    def evaluate(self, role, fp32, candidate, images):
        if role == "detector":
            return self.detection.evaluate(role, fp32, candidate, images)
        self.spec(role)
        crops = self._crops(fp32["detector"], images, "evaluation")
        key = ("reference", str(fp32[role]), str(fp32["detector"]), tuple(images))
        if key not in self._cache:
            self._cache[key] = self._keypoints(fp32[role], crops)
        ref_points, ref_scores = self._cache[key]
        got_points, _ = self._keypoints(candidate, crops)
        shown = ref_scores >= self.params.draw_threshold
        samples = int(shown.sum())
        value = pck(got_points, ref_points, crops.diagonals, ALPHA, shown) if samples else 0.0
        # with no person (or no confident joint) on the pictures nothing was judged: refuse, don't pass blind
        return Evaluation(METRIC, value, BUDGET, samples > 0 and value >= BUDGET, samples)
