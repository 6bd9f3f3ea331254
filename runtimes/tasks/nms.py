"""Non-maximum suppression in numpy, as Paddle's `multiclass_nms` does it (class-aware, greedy).

Boxes are [x1, y1, x2, y2] in any pixel frame; areas and overlaps use plain widths (x2 - x1),
which is Paddle's `normalized: true` arithmetic and what PaddleDetection's PicoDet deploy code uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x1, y1, x2, y2] box with each row of (N, 4) `boxes`."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = _areas(box[None])[0] + _areas(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = -1) -> np.ndarray:
    """Indices of the boxes kept, best score first: a box goes when it overlaps a better kept box
    by more than `iou_threshold`. Only the `top_k` best-scoring boxes are considered (-1: all)."""
    order = np.argsort(-scores, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, np.int64)


@dataclass
class Detections:
    boxes: np.ndarray      # (K, 4) float32 [x1, y1, x2, y2]
    scores: np.ndarray     # (K,) float32
    classes: np.ndarray    # (K,) int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
                   nms_top_k: int = -1, keep_top_k: int = -1) -> Detections:
    """(N, 4) boxes shared by all classes and (N, C) scores -> detections, best first.

    Per class: candidates scoring above `score_threshold`, at most `nms_top_k` of them, suppressed
    within the class only (a person box never hides a bicycle box); then at most `keep_top_k`
    over all classes.
    """
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    picked_boxes, picked_scores, picked_classes = [], [], []
    # only classes that have a candidate at all: COCO's 80 columns are mostly empty
    for cls in np.flatnonzero((scores > score_threshold).any(axis=0)):
        candidates = np.flatnonzero(scores[:, cls] > score_threshold)
        kept = candidates[nms(boxes[candidates], scores[candidates, cls], nms_threshold, nms_top_k)]
        picked_boxes.append(boxes[kept])
        picked_scores.append(scores[kept, cls])
        picked_classes.append(np.full(kept.shape, cls, np.int64))
    if not picked_scores:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    all_scores = np.concatenate(picked_scores)
    order = np.argsort(-all_scores, kind="stable")
    if keep_top_k > 0:
        order = order[:keep_top_k]
    return Detections(np.concatenate(picked_boxes)[order], all_scores[order], np.concatenate(picked_classes)[order])
