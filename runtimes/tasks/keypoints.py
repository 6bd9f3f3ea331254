"""Top-down human keypoints: a person detector (PP-PicoDet), then a pose model (PP-TinyPose) per person.

The detector runs as the detection task runs it (runtimes.tasks.detection); every `person` it
reports above its `draw_threshold` (the manifest's, PaddleDetection's det_threshold) is grown and
warped to the pose model's input (runtimes.tasks.heatmap), passed through the pose model's own
manifest pre-processing, run in batches as large as the model accepts, and its heatmaps decoded
(argmax + DARK) back into picture pixels.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bundle import Bundle, ModelEntry
from ..errors import BackendError, BundleError
from ..run_context import RunContext
from . import heatmap
from .base import ModelRunner, Stopwatch, Task, TaskOutput, Timings
from .detection import decode_detections, detection_params, detector_feeds, image_input
from .preprocess import Preprocess

# joint names by heatmap count: COCO (PaddleDetection's KeyPointTopDownCOCOEval models: TinyPose,
# HRNet) and MPII, in the order their datasets define
COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                  "left_knee", "right_knee", "left_ankle", "right_ankle"]
MPII_KEYPOINTS = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis",
                  "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
                  "left_shoulder", "left_elbow", "left_wrist"]
NAMES_BY_COUNT = {17: COCO_KEYPOINTS, 16: MPII_KEYPOINTS}


class PoseParams(BaseModel):
    """The pose model's `postprocess` dict, as the manifest states it."""
    model_config = ConfigDict(extra="forbid")

    kind: Literal["heatmaps"] = "heatmaps"
    use_dark: bool = True                              # sub-pixel peaks (PaddleDetection's default)
    draw_threshold: float = Field(0.5, ge=0.0, le=1.0)  # joints scoring below are not drawn (still reported)
    padding: float = Field(heatmap.PADDING, ge=1.0)    # context around a person box
    blur_kernel: int = Field(3, ge=1)                  # DARK's Gaussian, odd
    person_label: str = "person"                       # the detector class that gets poses
    max_persons: int = Field(20, gt=0)                 # best-scoring persons posed per picture
    batch_size: int = Field(16, gt=0)                  # persons per pose run, unless the input fixes it
    keypoint_names: list[str] | None = None            # default: by heatmap count (COCO 17, MPII 16)


def pose_params(entry: ModelEntry) -> PoseParams:
    if entry.postprocess.get("kind") != "heatmaps":
        raise BundleError(f"model '{entry.name}' ({entry.role}) has postprocess kind "
                          f"'{entry.postprocess.get('kind')}'; the keypoints task needs 'heatmaps'")
    try:
        params = PoseParams.model_validate(entry.postprocess)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.{field}: {first['msg']}") from None
    if params.blur_kernel % 2 == 0:
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.blur_kernel must be odd, "
                          f"not {params.blur_kernel}")
    return params


def pose_input_size(entry: ModelEntry) -> tuple[int, int]:
    """(width, height) of the pose model's input, from its top_down_affine pre-processing op."""
    for spec in entry.preprocess:
        if spec.get("op") == "top_down_affine":
            return int(spec["width"]), int(spec["height"])
    raise BundleError(f"model '{entry.name}' ({entry.role}) has no top_down_affine op in its pre-processing: "
                      f"it is not a top-down pose model")


def keypoint_names(params: PoseParams, count: int) -> list[str]:
    names = params.keypoint_names or NAMES_BY_COUNT.get(count)
    if names is None or len(names) != count:
        return [f"keypoint_{i}" for i in range(count)]
    return names


def select_persons(detections: list[dict[str, Any]], params: PoseParams) -> list[dict[str, Any]]:
    """The detections to pose: the person class, best first, at most max_persons."""
    return [d for d in detections if d["label"] == params.person_label][:params.max_persons]


class PoseInput:
    """Person boxes on a picture -> the pose model's input batch, with what maps heatmaps back.

    `entry` is the pose model's manifest entry (or, at conversion time, its ModelSpec).
    """

    def __init__(self, entry: ModelEntry, params: PoseParams):
        self.params = params
        self.width, self.height = pose_input_size(entry)
        self.preprocess = Preprocess(entry.preprocess)

    def crops(self, image: np.ndarray, boxes: list[list[float]]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Warped BGR crops (height x width), grown-box centres (N, 2) and sizes (N, 2)."""
        crops, centres, sizes = [], [], []
        for box in boxes:
            centre, size = heatmap.grow_box(box, self.width / self.height, self.params.padding)
            crops.append(heatmap.warp_person(image, centre, size, self.width, self.height))
            centres.append(centre)
            sizes.append(size)
        return crops, np.asarray(centres).reshape(-1, 2), np.asarray(sizes).reshape(-1, 2)

    def tensor(self, crops: list[np.ndarray]) -> np.ndarray:
        """Crops through the pose model's manifest chain (its affine step is identity on a crop)."""
        return np.concatenate([self.preprocess(crop)[0] for crop in crops])


class KeypointsTask(Task):
    name = "keypoints"

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        super().__init__(bundle, context)
        self.detector = ModelRunner(bundle, "detector", self.context)
        self.det_params = detection_params(self.detector.entry)
        self.det_inputs = self.detector.backend.input_names
        image_input(self.det_inputs)      # refuse an unknown input layout at load, not per image
        self.pose = ModelRunner(bundle, "pose", self.context)
        self.params = pose_params(self.pose.entry)
        self.pose_input = PoseInput(self.pose.entry, self.params)
        labels = self.detector.entry.labels or []
        if self.params.person_label not in labels:
            raise BundleError(f"detector '{self.detector.entry.name}' has no '{self.params.person_label}' class "
                              f"to pose (its labels: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})")
        fixed = self.pose.entry.input.shape[0] if self.pose.entry.input.shape else None
        self.batch_size = fixed if isinstance(fixed, int) and fixed > 0 else self.params.batch_size

    def __call__(self, image: np.ndarray) -> TaskOutput:
        timings = Timings()
        watch = Stopwatch(timings)
        persons = self.persons(image, watch)
        if not persons:
            return TaskOutput(results=[], timings=timings)
        with watch("pre"):
            crops, centres, sizes = self.pose_input.crops(image, [p["box"] for p in persons])
        maps = self.heatmaps(crops, watch)
        with watch("post"):
            points, scores = heatmap.decode(maps, centres, sizes, self.params.use_dark, self.params.blur_kernel)
            results = [self._result(person, pts, sc, maps.shape[1])
                       for person, pts, sc in zip(persons, points, scores)]
        return TaskOutput(results=results, timings=timings)

    def persons(self, image: np.ndarray, watch: Stopwatch | None = None) -> list[dict[str, Any]]:
        """The detector's person results (label, score, box in picture pixels), best first."""
        watch = watch or Stopwatch(Timings())
        with watch("pre"):
            tensor, frame = self.detector.preprocess(image)
            feeds = detector_feeds(self.det_inputs, tensor)
        with watch("infer"):
            outputs = self.detector.backend.run(feeds)
        with watch("post"):
            found = decode_detections(outputs, frame, tensor.shape[2:], self.det_params, self.detector.entry.labels)
            return select_persons(found, self.params)

    def heatmaps(self, crops: list[np.ndarray], watch: Stopwatch | None = None) -> np.ndarray:
        """Pose model heatmaps (N, K, H, W) for N warped crops."""
        watch = watch or Stopwatch(Timings())
        if not crops:
            return np.zeros((0, 0, 1, 1), np.float32)
        maps, start = [], 0
        while start < len(crops):      # batch_size may drop to 1 on the way (see _run_pose)
            chunk = crops[start:start + self.batch_size]
            with watch("pre"):
                batch = self.pose_input.tensor(chunk)
            with watch("infer"):
                maps.append(self._run_pose(batch))
            start += len(chunk)
        return np.concatenate(maps)

    def _run_pose(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.pose.infer(batch)[0]
        except BackendError:
            if len(batch) == 1:
                raise
            # the manifest left the batch size free but the artifact fixes it: go one by one from now on
            self.batch_size = 1
            return np.concatenate([self.pose.infer(batch[i:i + 1])[0] for i in range(len(batch))])

    def _result(self, person: dict[str, Any], points: np.ndarray, scores: np.ndarray, count: int) -> dict[str, Any]:
        names = keypoint_names(self.params, count)
        return {**person, "keypoints": [{"name": name, "x": round(float(x), 1), "y": round(float(y), 1),
                                         "score": round(float(s), 5)}
                                        for name, (x, y), s in zip(names, points, scores)]}
