"""Agreement metrics between a candidate model's results and the FP32 reference's.

Used at conversion time to decide whether a faster artifact (INT8, FP16) may replace FP32. The
reference is the FP32 model's own output, not ground truth: the question is "does the device
answer what the FP32 model would have answered".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from shapely.geometry import Polygon

from runtimes.measures import BoxMatch, edit_distance


def _polygon(box: np.ndarray | Sequence[float]) -> Polygon:
    """(4,2)/(N,2) corner points, or [x1, y1, x2, y2] for an axis-aligned rectangle."""
    arr = np.asarray(box, np.float64)
    if arr.shape == (4,):
        x1, y1, x2, y2 = arr
        arr = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    poly = Polygon(arr.reshape(-1, 2))
    return poly if poly.is_valid else poly.buffer(0)   # self-crossing quads: take the covered area


def box_iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    """Intersection over union of two quadrilaterals/polygons ((N,2) points) or rectangles ([x1,y1,x2,y2])."""
    pa, pb = _polygon(a), _polygon(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def match_boxes(predicted: Sequence, reference: Sequence, iou: float = 0.5,
                predicted_labels: Sequence | None = None, reference_labels: Sequence | None = None) -> BoxMatch:
    """Greedy one-to-one matching, highest IoU first; a pair counts when IoU >= `iou` (and labels agree)."""
    pairs = []
    for i, p in enumerate(predicted):
        for j, r in enumerate(reference):
            if predicted_labels is not None and reference_labels is not None \
                    and predicted_labels[i] != reference_labels[j]:
                continue
            value = box_iou(p, r)
            if value >= iou:
                pairs.append((value, i, j))
    used_p, used_r = set(), set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    tp = len(used_p)
    return BoxMatch(tp, len(predicted) - tp, len(reference) - tp)


def box_f1(predicted: Sequence, reference: Sequence, iou: float = 0.5) -> float:
    return match_boxes(predicted, reference, iou).f1


def top1_agreement(predicted: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray) -> float:
    """Share of samples whose top-1 class is the same (labels or score rows (N,C) accepted)."""
    p, r = np.asarray(predicted), np.asarray(reference)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    if r.ndim == 2:
        r = r.argmax(axis=1)
    if p.shape != r.shape:
        raise ValueError(f"top1_agreement: {p.shape[0]} predictions for {r.shape[0]} references")
    return float(np.mean(p == r)) if r.size else 1.0


def cer(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Character error rate: total edit distance / total reference characters (0.0 when both empty)."""
    if len(predicted) != len(reference):
        raise ValueError(f"cer: {len(predicted)} predictions for {len(reference)} references")
    errors = sum(edit_distance(p, r) for p, r in zip(predicted, reference))
    chars = sum(len(r) for r in reference)
    if chars == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / chars


def pck(predicted: np.ndarray, reference: np.ndarray, norm: np.ndarray | float, alpha: float = 0.05,
        visible: np.ndarray | None = None) -> float:
    """Percentage of correct keypoints: distance <= alpha * norm (per instance, e.g. box diagonal).

    predicted/reference: (N, K, 2); norm: (N,) or a scalar; visible: (N, K) mask of points to count.
    """
    p, r = np.asarray(predicted, np.float64), np.asarray(reference, np.float64)
    dist = np.linalg.norm(p - r, axis=-1)
    limit = alpha * np.broadcast_to(np.asarray(norm, np.float64).reshape(-1, 1) if np.ndim(norm) else norm,
                                    dist.shape)
    mask = np.ones(dist.shape, bool) if visible is None else np.asarray(visible, bool)
    return float(np.mean(dist[mask] <= limit[mask])) if mask.any() else 1.0


def mask_iou(predicted: np.ndarray, reference: np.ndarray) -> float:
    """IoU of two binary masks (1.0 when both are empty)."""
    p, r = np.asarray(predicted, bool), np.asarray(reference, bool)
    union = np.logical_or(p, r).sum()
    return float(np.logical_and(p, r).sum() / union) if union else 1.0


def mean_iou(predicted: np.ndarray, reference: np.ndarray, classes: int) -> float:
    """Mean over classes present in either label map of the per-class mask IoU."""
    p, r = np.asarray(predicted), np.asarray(reference)
    present = [c for c in range(classes) if (p == c).any() or (r == c).any()]
    return float(np.mean([mask_iou(p == c, r == c) for c in present])) if present else 1.0
