"""The last annotated frame of a pipeline, for Home Assistant's MQTT `image` entity.

Home Assistant's MQTT image platform takes raw image bytes on an `image_topic` (or a URL on a
`url_topic`, which would need an HTTP server on the device): so the daemon publishes a JPEG of
the frame with its results drawn on it (`edge.drawing`, the same pictures as `edge infer --draw`),
retained on `edge/<device>/<pipeline>/image`. Bounded on both sides: at most one frame every
`interval` seconds (drawing and encoding happen only then, in the daemon's main thread, a few
milliseconds) and at most `max_width` pixels wide.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from ..drawing import draw

log = logging.getLogger("edge.daemon")

JPEG_QUALITY = 75


def annotated_jpeg(task: str, image: np.ndarray, results: list[dict[str, Any]], max_width: int,
                   quality: int = JPEG_QUALITY) -> bytes:
    """`results` drawn on `image`, scaled down to at most `max_width` pixels wide, as JPEG bytes."""
    drawn = draw(task, image, results)
    height, width = drawn.shape[:2]
    if width > max_width:
        drawn = cv2.resize(drawn, (max_width, max(1, round(height * max_width / width))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return data.tobytes()


class FrameImages:
    """The worker's thread offers each processed frame (a reference, no copy); the main thread takes
    the newest as JPEG once `interval` seconds have passed since the last, so the last frame of a
    burst is shown too, and the drawing and encoding cost at most one frame per interval."""

    def __init__(self, task: str, interval: float, max_width: int, clock=time.monotonic):
        self.task, self.interval, self.max_width = task, interval, max_width
        self._clock = clock
        self._next = 0.0
        self._newest: tuple[np.ndarray, list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()
        self.made = 0

    def offer(self, image: np.ndarray, results: list[dict[str, Any]]) -> None:
        with self._lock:
            self._newest = (image, results)

    def take(self) -> bytes | None:
        """A JPEG of the newest frame if one came and the interval has passed, else None."""
        now = self._clock()
        if now < self._next:
            return None
        with self._lock:
            newest, self._newest = self._newest, None
        if newest is None:
            return None
        self._next = now + self.interval
        try:
            jpeg = annotated_jpeg(self.task, newest[0], newest[1], self.max_width)
        except Exception as err:      # a picture for people must never cost the daemon
            log.warning("could not draw the frame for Home Assistant: %s", err)
            return None
        self.made += 1
        return jpeg
