"""DB (Differentiable Binarization) text-detection post-processing, following PaddleOCR's DBPostProcess.

The detector outputs a text-probability map at the resized input's size. Text regions are the
connected blobs of `prob > thresh`; each blob becomes its minimum-area rectangle, is scored by the
mean probability inside it, grown back by `unclip_ratio` (the model is trained on shrunk polygons)
and mapped to original-image pixels through the pre-processing Frame.
"""
from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import pyclipper
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BundleError
from .preprocess import Frame

# PaddleOCR's fixed size floor (in prob-map pixels) for a candidate's short side; +2 after unclipping.
MIN_SIZE = 3
# DB recognises text by the background around it, so a tight word crop (text touching the edges)
# yields no box at all. Images whose short side is under this many pixels get a replicated border of
# half that side first (PaddleOCR has no such step and returns nothing for such crops).
TIGHT_CROP_SIDE = 96


class DbParams(BaseModel):
    """The `postprocess` dict of a DB detector, as the manifest states it."""
    model_config = ConfigDict(extra="forbid")

    kind: Literal["db"] = "db"
    thresh: float = Field(0.3, ge=0.0, le=1.0)        # pixel is text when prob > thresh
    box_thresh: float = Field(0.6, ge=0.0, le=1.0)    # keep a box when its mean prob >= box_thresh
    max_candidates: int = Field(1000, gt=0)
    unclip_ratio: float = Field(1.5, gt=0.0)
    use_dilation: bool = False
    score_mode: Literal["fast", "slow"] = "fast"
    box_type: Literal["quad"] = "quad"


def db_params(params: dict[str, Any] | DbParams) -> DbParams:
    if isinstance(params, DbParams):
        return params
    try:
        return DbParams.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "postprocess"
        raise BundleError(f"det postprocess: {field}: {first['msg']}") from None


def mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle of a point set as (4,2) float32 [tl, tr, br, bl], and its short side."""
    rect = cv2.minAreaRect(points)
    corners = cv2.boxPoints(rect)
    corners = corners[np.argsort(corners[:, 0], kind="stable")]
    left = corners[:2][np.argsort(corners[:2, 1], kind="stable")]     # top-left, bottom-left
    right = corners[2:][np.argsort(corners[2:, 1], kind="stable")]    # top-right, bottom-right
    box = np.stack([left[0], right[0], right[1], left[1]])
    return box, float(min(rect[1]))


def _score_fast(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the rectangle, computed on its bounding window only."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(box - (x0, y0)).astype(np.int32)], 1)
    return cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0]


def _score_slow(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the blob's own contour (slower, tighter on curved text)."""
    return _score_fast(prob, contour.reshape(-1, 2).astype(np.float32))


def unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    """Grow a polygon by area * ratio / perimeter (the inverse of DB's training-time shrink)."""
    pts = box.astype(np.float64)
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    length = float(np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum())
    if length == 0.0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / length)
    if not grown:
        return None
    return np.asarray([p for path in grown for p in path], np.float32)


def add_margin(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Image -> (image with a replicated border when it may be a tight text crop, border width)."""
    short_side = min(image.shape[:2])
    if short_side >= TIGHT_CROP_SIDE:
        return image, 0
    margin = max(1, short_side // 2)
    return cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE), margin


def remove_margin(frame: Frame, margin: int, src_hw: tuple[int, int]) -> Frame:
    """Make `frame` map back to the picture before `add_margin`: a border is a negative crop offset."""
    if margin:
        sx, sy = frame.scale_xy
        ox, oy = frame.offset_xy
        frame.offset_xy = (ox - margin * sx, oy - margin * sy)
        frame.src_hw = (int(src_hw[0]), int(src_hw[1]))
    return frame


def _to_source(box: np.ndarray, frame: Frame) -> np.ndarray:
    """Prob-map pixels -> original-image pixels, rounded and clipped to the picture as PaddleOCR does."""
    sx, sy = frame.scale_xy
    ox, oy = frame.offset_xy
    src_h, src_w = frame.src_hw
    out = np.empty_like(box)
    out[:, 0] = np.clip(np.round((box[:, 0] + ox) / sx), 0, src_w - 1)
    out[:, 1] = np.clip(np.round((box[:, 1] + oy) / sy), 0, src_h - 1)
    return out


def _too_small(box: np.ndarray) -> bool:
    width = int(np.linalg.norm(box[0] - box[1]))
    height = int(np.linalg.norm(box[0] - box[3]))
    return width <= MIN_SIZE or height <= MIN_SIZE


def db_boxes(prob_map: np.ndarray, frame: Frame, params: dict[str, Any] | DbParams
             ) -> list[tuple[np.ndarray, float]]:
    """(H,W) text-probability map -> [(box (4,2) float32 [tl,tr,br,bl] in source pixels, score)].

    Boxes come in contour order (not reading order); see `ocr_text.sort_boxes`.
    """
    p = db_params(params)
    prob = np.asarray(prob_map, np.float32)
    bitmap = (prob > p.thresh).astype(np.uint8)
    if p.use_dilation:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)

    found = []
    for contour in contours[:p.max_candidates]:
        box, short_side = mini_box(contour)
        if short_side < MIN_SIZE:
            continue
        score = _score_fast(prob, box) if p.score_mode == "fast" else _score_slow(prob, contour)
        if score < p.box_thresh:
            continue
        grown = unclip(box, p.unclip_ratio)
        if grown is None:
            continue
        box, short_side = mini_box(grown)
        if short_side < MIN_SIZE + 2:
            continue
        box = _to_source(box, frame)
        if not _too_small(box):
            found.append((box, float(score)))
    return found
