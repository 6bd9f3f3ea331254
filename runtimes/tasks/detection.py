"""Object detection (PaddleDetection exports: PP-PicoDet and other GFL-style detectors).

A PaddleDetection detector comes in one of three output forms, told apart by the outputs' shapes
(names differ between exporters and converters):

- `raw_head`: exported without post-processing (what `arch: PicoDet` means): per stride in
  `fpn_stride`, a class-score map [1, N, C] (already sigmoid) then, after all of them, a box map
  [1, N, 4 * (reg_max + 1)] of distribution logits (DFL). Decoded here: anchor centres, softmax
  expectation of each side's distance, class-aware NMS.
- `boxes_scores`: post-processing in the network, NMS left out: boxes [1, N, 4], scores [1, C, N].
- `nms`: NMS in the network too: rows [class, score, x1, y1, x2, y2] plus a box count.

Boxes are worked out in network-input pixels (`scale_factor` inputs get ones, so the network does
not rescale) and mapped back to the original picture through the pre-processing Frame, the same
way for every form. Results scoring above `draw_threshold` are published, best first.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bundle import Bundle, ModelEntry
from ..errors import BundleError
from ..run_context import RunContext
from .base import ModelRunner, Stopwatch, Task, TaskOutput, Timings
from .nms import Detections, multiclass_nms
from .preprocess import Frame

ROLE = "detector"


class DetectionParams(BaseModel):
    """The detector's `postprocess` dict, as the manifest states it (from infer_cfg.yml)."""
    model_config = ConfigDict(extra="forbid")

    kind: Literal["detection"] = "detection"
    fpn_stride: list[int] = Field(default_factory=list)   # raw-head exports: stride of each score map
    score_threshold: float = Field(0.3, ge=0.0, le=1.0)   # NMS candidates score above this
    nms_threshold: float = Field(0.5, gt=0.0, le=1.0)     # same-class boxes overlapping more are dropped
    nms_top_k: int = 1000                                 # candidates per class before NMS (-1: all)
    keep_top_k: int = 100                                 # detections kept after NMS (-1: all)
    draw_threshold: float = Field(0.5, ge=0.0, le=1.0)    # published when scoring above this


def detection_params(entry: ModelEntry) -> DetectionParams:
    if entry.postprocess.get("kind") != "detection":
        raise BundleError(f"model '{entry.name}' ({entry.role}) has postprocess kind "
                          f"'{entry.postprocess.get('kind')}'; the detection task needs 'detection'")
    try:
        return DetectionParams.model_validate(entry.postprocess)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.{field}: {first['msg']}") from None


# ---- inputs --------------------------------------------------------------------------------------
# Inputs besides the image that PaddleDetection exports may have. scale_factor (resized/original,
# [y, x]) only divides the network's boxes; ones keep them in input pixels.
AUX_INPUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "scale_factor": lambda tensor: np.ones((1, 2), np.float32),
    "im_shape": lambda tensor: np.array([tensor.shape[2:]], np.float32),
}


def image_input(input_names: list[str]) -> str:
    images = [name for name in input_names if name not in AUX_INPUTS]
    if len(images) != 1:
        raise BundleError(f"detector inputs {input_names}: expected one image input besides "
                          f"{', '.join(AUX_INPUTS)}")
    return images[0]


def detector_feeds(input_names: list[str], tensor: np.ndarray) -> dict[str, np.ndarray]:
    """The image batch plus whatever auxiliary inputs the network declares."""
    image = image_input(input_names)
    return {name: tensor if name == image else AUX_INPUTS[name](tensor) for name in input_names}


# ---- output forms --------------------------------------------------------------------------------
def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _is_raw_head(outputs: list[np.ndarray], levels: int) -> bool:
    if not levels or len(outputs) != 2 * levels or any(o.ndim != 3 or o.shape[0] != 1 for o in outputs):
        return False
    scores, boxes = outputs[:levels], outputs[levels:]
    return all(s.shape[1] == b.shape[1] and b.shape[2] % 4 == 0 and s.shape[2] == scores[0].shape[2]
               for s, b in zip(scores, boxes))


def output_form(outputs: list[np.ndarray], params: DetectionParams) -> str:
    """Which export form these outputs are (see the module docstring)."""
    if _is_raw_head(outputs, len(params.fpn_stride)):
        return "raw_head"
    first = outputs[0]
    if len(outputs) >= 2 and first.ndim == 2 and first.shape[1] == 6:
        return "nms"
    if len(outputs) == 2 and first.ndim == 3 and first.shape[2] == 4 and outputs[1].ndim == 3 \
            and outputs[1].shape[2] == first.shape[1]:
        return "boxes_scores"
    shapes = ", ".join(str(list(o.shape)) for o in outputs)
    raise BundleError(f"detector outputs [{shapes}] match no known PaddleDetection form (raw PicoDet head "
                      f"for fpn_stride {params.fpn_stride}, boxes [1,N,4] + scores [1,C,N], or NMS rows [N,6])")


def _nms(boxes: np.ndarray, scores: np.ndarray, params: DetectionParams) -> Detections:
    return multiclass_nms(boxes, scores, params.score_threshold, params.nms_threshold,
                          params.nms_top_k, params.keep_top_k)


def decode_raw_head(outputs: list[np.ndarray], input_hw: tuple[int, int], params: DetectionParams) -> Detections:
    """PicoDet head maps -> detections in input pixels (PaddleDetection's PicoDetPostProcess)."""
    levels = len(params.fpn_stride)
    boxes, scores = [], []
    for stride, score_map, box_map in zip(params.fpn_stride, outputs[:levels], outputs[levels:]):
        grid_w = math.ceil(input_hw[1] / stride)
        count = score_map.shape[1]
        if count != math.ceil(input_hw[0] / stride) * grid_w:
            raise BundleError(f"detector score map of {count} cells does not fit stride {stride} on a "
                              f"{input_hw[0]}x{input_hw[1]} input; fpn_stride {params.fpn_stride} is wrong")
        level_scores = score_map[0]
        # only cells that can pass the score threshold are worth decoding (a few of thousands)
        cells = np.flatnonzero(level_scores.max(axis=1) > params.score_threshold)
        bins = box_map.shape[2] // 4
        logits = box_map[0, cells].reshape(len(cells), 4, bins)
        distance = (_softmax(logits) * np.arange(bins, dtype=np.float32)).sum(axis=2) * stride   # l, t, r, b
        row, col = np.divmod(cells, grid_w)
        cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
        boxes.append(np.stack([cx - distance[:, 0], cy - distance[:, 1],
                               cx + distance[:, 2], cy + distance[:, 3]], axis=1))
        scores.append(level_scores[cells])
    return _nms(np.concatenate(boxes), np.concatenate(scores), params)


def decode_boxes_scores(outputs: list[np.ndarray], input_hw: tuple[int, int],
                        params: DetectionParams) -> Detections:
    boxes, scores = outputs[0][0], outputs[1][0]       # [N, 4], [C, N]
    return _nms(boxes, scores.T, params)


def decode_nms(outputs: list[np.ndarray], input_hw: tuple[int, int], params: DetectionParams) -> Detections:
    rows = outputs[0]
    count = int(np.asarray(outputs[1]).reshape(-1)[0]) if outputs[1].size else len(rows)
    rows = rows[:count]
    rows = rows[rows[:, 0] >= 0]          # Paddle pads "nothing found" with a class -1 row
    order = np.argsort(-rows[:, 1], kind="stable")
    rows = rows[order]
    return Detections(rows[:, 2:6].astype(np.float32), rows[:, 1].astype(np.float32), rows[:, 0].astype(np.int64))


DECODERS: dict[str, Callable[[list[np.ndarray], tuple[int, int], DetectionParams], Detections]] = {
    "raw_head": decode_raw_head, "boxes_scores": decode_boxes_scores, "nms": decode_nms,
}


# ---- results -------------------------------------------------------------------------------------
def to_source(boxes: np.ndarray, frame: Frame) -> np.ndarray:
    """Input-pixel boxes -> original-image pixels, clipped to the picture."""
    sx, sy = frame.scale_xy
    ox, oy = frame.offset_xy
    src_h, src_w = frame.src_hw
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, [0, 2]] = np.clip((boxes[:, [0, 2]] + ox) / sx, 0, src_w)
    out[:, [1, 3]] = np.clip((boxes[:, [1, 3]] + oy) / sy, 0, src_h)
    return out


def decode_detections(outputs: list[np.ndarray], frame: Frame, input_hw: tuple[int, int],
                      params: DetectionParams, labels: list[str] | None,
                      threshold: float | None = None) -> list[dict[str, Any]]:
    """Network outputs -> [{"label", "score", "box": [x1, y1, x2, y2]}] in original pixels, best first.

    `threshold` defaults to the export's draw_threshold (what PaddleDetection shows a user).
    """
    found = DECODERS[output_form(outputs, params)](outputs, input_hw, params)
    limit = params.draw_threshold if threshold is None else threshold
    keep = found.scores > limit
    boxes = to_source(found.boxes[keep], frame)
    results = []
    for box, score, cls in zip(boxes, found.scores[keep], found.classes[keep]):
        if box[2] > box[0] and box[3] > box[1]:     # boxes wholly outside the picture vanish
            label = labels[cls] if labels and cls < len(labels) else str(int(cls))
            results.append({"label": label, "score": round(float(score), 5),
                            "box": [round(float(v), 1) for v in box]})
    return results


class DetectionTask(Task):
    name = "detection"

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        super().__init__(bundle, context)
        self.runner = ModelRunner(bundle, ROLE, self.context)
        self.params = detection_params(self.runner.entry)
        self.labels = self.runner.entry.labels
        self.input_names = self.runner.backend.input_names
        image_input(self.input_names)      # refuse an unknown input layout at load, not per image

    def __call__(self, image: np.ndarray) -> TaskOutput:
        timings = Timings()
        watch = Stopwatch(timings)
        with watch("pre"):
            tensor, frame = self.runner.preprocess(image)
            feeds = detector_feeds(self.input_names, tensor)
        with watch("infer"):
            outputs = self.runner.backend.run(feeds)
        with watch("post"):
            results = decode_detections(outputs, frame, tensor.shape[2:], self.params, self.labels)
        return TaskOutput(results=results, timings=timings)
