"""Drawing a task's results on its picture, for people to look at (demo, `edge infer --draw`).

One module per kind of result, found through DRAWING_MODULES (task name -> module) and imported
only when a task asks for it. Each module offers `DRAWERS: dict[task name, function]`, every
function `(BGR image, results) -> new BGR image` drawing the very `results` that the task
publishes (TaskOutput.results); the input image is left untouched. OpenCV only: a device has it.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from runtimes.errors import BundleError

DRAWING_MODULES = {"detection": "boxes", "classification": "boxes", "ocr": "boxes",
                   "keypoints": "pose", "segmentation": "mask"}

Drawer = Callable[[np.ndarray, list[dict[str, Any]]], np.ndarray]


def drawer(task: str) -> Drawer:
    if task not in DRAWING_MODULES:
        raise BundleError(f"no drawing for task '{task}' (known: {', '.join(DRAWING_MODULES)})")
    try:
        module = importlib.import_module(f"{__name__}.{DRAWING_MODULES[task]}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{DRAWING_MODULES[task]}":
            raise                       # the module exists but something it needs is missing
        raise BundleError(f"drawing for task '{task}' is not part of this edge build "
                          f"(no module {err.name})") from None
    drawers = getattr(module, "DRAWERS", {})
    if task not in drawers:
        raise BundleError(f"drawing module '{DRAWING_MODULES[task]}' has no drawer for task '{task}'")
    return drawers[task]


def draw(task: str, image: np.ndarray, results: list[dict[str, Any]]) -> np.ndarray:
    """A copy of `image` with `results` of `task` drawn on it."""
    return drawer(task)(image, results)


__all__ = ["DRAWING_MODULES", "Drawer", "drawer", "draw"]
