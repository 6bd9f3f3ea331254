"""Segmentation results over the picture: each class mask tinted, outlined and labelled."""
from __future__ import annotations

import zlib
from typing import Any

import cv2
import numpy as np

from runtimes.tasks import rle

ALPHA = 0.45          # share of the tint in a masked pixel
# well-separated BGR colours; a label always gets the same one (crc32 of its name)
PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
           (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


def color_of(label: str) -> tuple[int, int, int]:
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def _caption(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    scale = max(0.4, min(image.shape[:2]) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(th + base, y)
    cv2.rectangle(image, (x, y - th - base), (x + tw + 2, y), color, -1)
    cv2.putText(image, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw(image: np.ndarray, results: list[dict[str, Any]]) -> np.ndarray:
    """BGR picture + segmentation results -> a new BGR picture with the masks drawn over it."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for item in results:
        label = str(item.get("label", "?"))
        color = color_of(label)
        if "mask" in item:
            mask = rle.decode(item["mask"])
            if mask.shape != canvas.shape[:2]:   # drawn on a different-size copy of the picture
                mask = cv2.resize(mask.astype(np.uint8), (canvas.shape[1], canvas.shape[0]),
                                  interpolation=cv2.INTER_NEAREST).astype(bool)
            tint = np.array(color, np.float32)
            canvas[mask] = (canvas[mask].astype(np.float32) * (1 - ALPHA) + tint * ALPHA).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, color, thickness, cv2.LINE_AA)
        box = item.get("box")
        if box:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            if "mask" not in item:
                cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            ratio = item.get("area_ratio")
            _caption(canvas, f"{label} {ratio:.0%}" if isinstance(ratio, (int, float)) else label, x1, y1, color)
    return canvas


DRAWERS = {"segmentation": draw}
