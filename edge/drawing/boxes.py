"""Boxes and labels: detection rectangles, a classification banner, OCR quadrilaterals with text.

Sizes follow the picture (a 4000-pixel photo and a 320-pixel crop both stay readable); colours
follow the label, so one class keeps its colour from frame to frame. OpenCV's Hershey fonts only
have ASCII: other characters are drawn as '?' (the published results keep the real text).
"""
from __future__ import annotations

import zlib
from typing import Any

import cv2
import numpy as np

# distinct BGR colours, bright enough to read dark text on
PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
           (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _color(label: str) -> tuple[int, int, int]:
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def _scale(image: np.ndarray) -> tuple[float, int]:
    """Font scale and line thickness for this picture's size."""
    side = min(image.shape[:2])
    return max(0.4, side / 900), max(1, round(side / 450))


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _tag(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """`text` on a filled `color` strip whose bottom-left corner is at (x, y), kept inside the picture."""
    font_scale, thickness = _scale(image)
    text = _ascii(text)
    (tw, th), base = cv2.getTextSize(text, FONT, font_scale, thickness)
    h, w = image.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y = int(min(max(th + base + 4, y), h))
    cv2.rectangle(image, (x, y - th - base - 4), (x + tw + 4, y), color, cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, y - base - 2), FONT, font_scale, ink, thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, results: list[dict[str, Any]]) -> np.ndarray:
    """Detection results ({"label", "score", "box": [x1, y1, x2, y2]}): rectangles with "label 0.92"."""
    out = image.copy()
    _, thickness = _scale(out)
    # lowest score first, so the most confident boxes and tags end up on top
    for item in sorted(results, key=lambda r: r["score"]):
        x1, y1, x2, y2 = (int(round(v)) for v in item["box"])
        color = _color(item["label"])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness + 1)
        _tag(out, f"{item['label']} {item['score']:.2f}", x1, y1, color)
    return out


def draw_classification(image: np.ndarray, results: list[dict[str, Any]]) -> np.ndarray:
    """Classification results ({"label", "score"}, best first): a banner across the top."""
    out = image.copy()
    font_scale, thickness = _scale(out)
    font_scale *= 1.5       # the banner is the whole message: larger than box tags
    lines = [f"{r['label']} {r['score']:.2f}" for r in results] or ["(no class)"]
    line_h = cv2.getTextSize("Ag", FONT, font_scale, thickness)[0][1] + 12
    band = out[:min(out.shape[0], line_h * len(lines) + 8)]
    band[:] = (band * 0.35).astype(out.dtype)       # darken, so white text reads on any picture
    for index, text in enumerate(lines):
        cv2.putText(out, _ascii(text), (8, line_h * (index + 1)), FONT, font_scale,
                    (255, 255, 255) if index == 0 else (200, 200, 200), thickness, cv2.LINE_AA)
    return out


def draw_ocr(image: np.ndarray, results: list[dict[str, Any]]) -> np.ndarray:
    """OCR results ({"text", "score", "box": 4 corner points}): outlines with the text above them."""
    out = image.copy()
    _, thickness = _scale(out)
    for item in results:
        corners = np.asarray(item["box"], np.float32).reshape(-1, 2)
        cv2.polylines(out, [np.round(corners).astype(np.int32)], True, (0, 200, 0), thickness)
        top_left = corners[np.argmin(corners.sum(axis=1))]
        _tag(out, item.get("text", ""), int(top_left[0]), int(top_left[1]), (0, 200, 0))
    return out


DRAWERS = {"detection": draw_detections, "classification": draw_classification, "ocr": draw_ocr}
