"""Text-line stages of PP-OCR: reading order, line crops, recognition batches, CTC decoding.

Plain numpy in and out (no Bundle), so conversion-time calibration and evaluation reuse them.
Each follows what PaddleOCR's predict_system / predict_rec do, so a bundle reads like PaddleOCR.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import BundleError

# Boxes whose top-left corners are closer than this vertically (source pixels) share a line.
SAME_LINE_PX = 10.0
# A crop at least this much taller than wide is vertical text: turn it to lie horizontally.
VERTICAL_RATIO = 1.5
# Widest / narrowest line (aspect ratio) in one recognizer batch: at most half of a row is padding.
PAD_SPREAD = 2.0


def reading_order(boxes: Sequence[np.ndarray], same_line_px: float = SAME_LINE_PX) -> list[int]:
    """Indices of `boxes` top-to-bottom, then left-to-right among boxes on the same line.

    Same rule as PaddleOCR's sorted_boxes: sort by the top-left corner (y, x), then let a box move
    left past its predecessors while their top-left y differ by less than `same_line_px`.
    """
    if len(boxes) == 0:
        return []
    corners = np.asarray([np.asarray(b, np.float64)[0] for b in boxes])
    xs, ys = corners[:, 0], corners[:, 1]
    order = np.lexsort((xs, ys)).tolist()
    for i in range(len(order) - 1):
        j = i
        while j >= 0 and abs(ys[order[j + 1]] - ys[order[j]]) < same_line_px \
                and xs[order[j + 1]] < xs[order[j]]:
            order[j], order[j + 1] = order[j + 1], order[j]
            j -= 1
    return order


def sort_boxes(boxes: Sequence[np.ndarray], same_line_px: float = SAME_LINE_PX) -> list[np.ndarray]:
    """Boxes ((4,2) [tl,tr,br,bl]) in reading order."""
    return [boxes[i] for i in reading_order(boxes, same_line_px)]


def crop_text(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Perspective-rectify the quadrilateral `box` ([tl,tr,br,bl]) out of `image`.

    Size is the longer of each pair of opposite sides; tall crops (vertical text) are turned
    90 degrees counter-clockwise so that the recognizer always sees a horizontal line.
    """
    pts = np.asarray(box, np.float32)
    width = max(1, int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3]))))
    height = max(1, int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2]))))
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(pts, target)
    crop = cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
    if height / width >= VERTICAL_RATIO:
        crop = cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return crop


def rotate_upside_down(crops: list[np.ndarray], labels: np.ndarray, scores: np.ndarray,
                       upside_down: int, thresh: float) -> list[np.ndarray]:
    """The angle classifier's decision: turn a crop 180 degrees when it is confidently upside down."""
    return [cv2.rotate(crop, cv2.ROTATE_180) if label == upside_down and score > thresh else crop
            for crop, label, score in zip(crops, labels.tolist(), scores.tolist())]


def line_batches(crops: Sequence[np.ndarray], size: int, floor: float = 0.0) -> list[list[int]]:
    """Crop indices batched in aspect (width/height) order, at most `size` a batch, and a batch closed
    before its widest line gets PAD_SPREAD times as wide as its narrowest (aspects floored at `floor`,
    the model's minimum width / height). PaddleOCR batches every 6 lines whatever their widths, so a
    short word beside a long line is ~90% zero padding: the padding reaches every position through
    SVTR's attention and lowers the word's score (ocr_en_img623 'AA': 0.87 alone, 0.68 so batched in
    FP32, lost in INT8), and it is computed for nothing."""
    aspects = [max(c.shape[1] / max(c.shape[0], 1), floor) for c in crops]
    batches: list[list[int]] = []
    for i in np.argsort(aspects, kind="stable").tolist():
        if not batches or len(batches[-1]) == size or aspects[i] > PAD_SPREAD * aspects[batches[-1][0]]:
            batches.append([])
        batches[-1].append(i)
    return batches


def rec_batch(crops: Sequence[np.ndarray], height: int, min_width: int, max_width: int | None = None, *,
              scale: float = 1 / 255, mean: Sequence[float] = (0.5, 0.5, 0.5),
              std: Sequence[float] = (0.5, 0.5, 0.5), rgb: bool = False) -> np.ndarray:
    """Line crops (HxWx3 uint8) -> (N,3,height,W) float32 batch, as PaddleOCR's resize_norm_img.

    W = int(height * widest aspect ratio in the batch), at least `min_width` (the model's nominal
    width) and at most `max_width` (a fixed-width model input such as the angle classifier's).
    Each crop keeps its aspect ratio, is normalised, and is zero-padded on the right.
    """
    widest = max(c.shape[1] / max(c.shape[0], 1) for c in crops)
    width = max(min_width, int(height * widest))
    if max_width:
        width = min(width, max_width)
    # (x * scale - mean) / std as one multiply-add per channel
    gain = np.float32(scale) / np.asarray(std, np.float32)
    bias = -np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    batch = np.zeros((len(crops), 3, height, width), np.float32)
    for i, crop in enumerate(crops):
        ratio = crop.shape[1] / max(crop.shape[0], 1)
        resized_w = max(1, min(width, int(math.ceil(height * ratio))))
        resized = cv2.resize(crop, (resized_w, height))
        if rgb:
            resized = resized[:, :, ::-1]
        batch[i, :, :, :resized_w] = (resized * gain + bias).transpose(2, 0, 1)
    return batch


def ctc_decode(probs: np.ndarray, charset: Sequence[str]) -> list[tuple[str, float]]:
    """Greedy CTC: per step the most likely class; merge repeats, drop blanks (class 0).

    Score is the mean of the kept steps' max probabilities (0.0 for an empty reading).
    """
    if probs.ndim != 3 or probs.shape[2] != len(charset):
        raise BundleError(f"recognizer outputs {probs.shape[-1]} classes but the character dictionary "
                          f"gives {len(charset)} (blank + dictionary + space): dictionary and model differ")
    best = probs.argmax(axis=2)
    best_prob = np.take_along_axis(probs, best[:, :, None], axis=2)[:, :, 0]
    keep = best != 0
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    decoded = []
    for row, mask, conf in zip(best, keep, best_prob):
        kept = row[mask]
        text = "".join([charset[k] for k in kept.tolist()])
        decoded.append((text, float(conf[mask].mean()) if kept.size else 0.0))
    return decoded


def load_charset(path: str | Path, use_space_char: bool) -> list[str]:
    """Recognition classes: index 0 is the CTC blank, then one per dictionary line, then ' ' if asked."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise BundleError(f"character dictionary {path.name} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise BundleError(f"character dictionary {path.name} is not UTF-8 text") from None
    # Split on '\n' only: str.splitlines would also split on rare characters a dictionary may hold.
    lines = [line.strip("\r\n") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise BundleError(f"character dictionary {path.name} is empty")
    return ["<blank>"] + lines + ([" "] if use_space_char else [])
