"""Keypoint results over the picture: person box, COCO skeleton limbs and joints."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

VISIBLE = 0.5        # joints scoring below this are not drawn (PaddleDetection's keypoint_threshold)
BOX_COLOR = (0, 200, 255)
SIDE_COLORS = {"left": (255, 128, 0), "right": (0, 128, 255), "centre": (0, 220, 0)}   # BGR
# limbs by joint name, so a model with other or fewer joints still draws what it has
SKELETON = [("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
            ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
            ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
            ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
            ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
            ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
            ("right_hip", "right_knee"), ("right_knee", "right_ankle")]


def _side(*names: str) -> tuple[int, int, int]:
    sides = {"left" if n.startswith("left") else "right" if n.startswith("right") else "centre" for n in names}
    return SIDE_COLORS[sides.pop()] if len(sides) == 1 else SIDE_COLORS["centre"]


def draw(image: np.ndarray, results: list[dict[str, Any]], threshold: float = VISIBLE) -> np.ndarray:
    """BGR picture + keypoints results -> a new BGR picture with every person's pose drawn."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 250))
    for person in results:
        box = person.get("box")
        if box:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, max(1, thickness // 2))
            score = person.get("score")
            if isinstance(score, (int, float)):
                cv2.putText(canvas, f"{person.get('label', 'person')} {score:.2f}", (x1, max(12, y1 - 4)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4 + thickness * 0.1, BOX_COLOR, 1, cv2.LINE_AA)
        joints = {kp["name"]: (int(round(kp["x"])), int(round(kp["y"])))
                  for kp in person.get("keypoints", []) if kp.get("score", 0.0) >= threshold}
        for a, b in SKELETON:
            if a in joints and b in joints:
                cv2.line(canvas, joints[a], joints[b], _side(a, b), thickness, cv2.LINE_AA)
        for name, point in joints.items():
            cv2.circle(canvas, point, thickness + 2, _side(name), -1, cv2.LINE_AA)
    return canvas


DRAWERS = {"keypoints": draw}
