"""Pre-processing ops, named and parameterised by the bundle manifest (taken from the export's metadata).

Each op takes and returns a `Frame`: the working image plus what later stages need to map results
back to the original picture. Ops are plain functions in one registry table; a manifest names them.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, get_type_hints

import cv2
import numpy as np
from pydantic import TypeAdapter, ValidationError

from ..errors import BundleError

# Long-side cap of an enlarged picture under a short-side (min) limit with no max_side_limit (PaddleX's default).
MIN_LIMIT_SIDE_CAP = 4000
INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                 "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


@dataclass
class Frame:
    image: np.ndarray                       # HWC until `to_chw`, CHW after
    src_hw: tuple[int, int]                 # original image height, width
    scale_xy: tuple[float, float] = (1.0, 1.0)   # resized / original
    offset_xy: tuple[float, float] = (0.0, 0.0)  # crop offset in resized pixels
    extra: dict[str, Any] = field(default_factory=dict)


def color(frame: Frame, order: str = "rgb") -> Frame:
    if order == "rgb":
        frame.image = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
    return frame


def _resize_to(frame: Frame, width: int, height: int, interp: str) -> Frame:
    h, w = frame.image.shape[:2]
    frame.image = cv2.resize(frame.image, (width, height), interpolation=INTERPOLATION[interp])
    sx, sy = frame.scale_xy
    frame.scale_xy = (sx * width / w, sy * height / h)
    return frame


def resize(frame: Frame, width: int, height: int, interp: str = "linear", keep_ratio: bool = False) -> Frame:
    if keep_ratio:
        h, w = frame.image.shape[:2]
        ratio = min(width / w, height / h)
        width, height = max(1, round(w * ratio)), max(1, round(h * ratio))
    return _resize_to(frame, width, height, interp)


def resize_limit(frame: Frame, limit_side_len: int = 960, limit_type: str = "max", multiple: int = 32,
                 interp: str = "linear", min_side_len: int = 0, small_side_len: int | None = None,
                 max_side_limit: int | None = None) -> Frame:
    """PaddleOCR's DetResizeForTest: bound the long (max) or short (min) side, round to a multiple.

    Small-input policy (off at min_side_len 0): a small picture, whose short side is still under
    `small_side_len` (default: min_side_len), is enlarged until its short side is `min_side_len` or its long
    side `max_side_limit` (default: limit_side_len under a max limit, so no picture costs more than the
    largest the export allows; MIN_LIMIT_SIDE_CAP under a min limit), so a small photo of small print gives
    the detector text big enough to see. Bigger pictures stay as they were: enlarging them makes their big
    lettering too big for the detector (a shop sign's name, PP-OCRv4 mobile det).
    """
    h, w = frame.image.shape[:2]
    side = max(h, w) if limit_type == "max" else min(h, w)
    ratio = 1.0
    if (limit_type == "max" and side > limit_side_len) or (limit_type == "min" and side < limit_side_len):
        ratio = limit_side_len / side
    if min_side_len and min(h, w) * ratio < (small_side_len or min_side_len):
        cap = max_side_limit or (limit_side_len if limit_type == "max" else MIN_LIMIT_SIDE_CAP)
        grow = min(min_side_len / (min(h, w) * ratio), cap / (max(h, w) * ratio))
        ratio *= max(grow, 1.0)
    new_h = max(multiple, int(round(h * ratio / multiple)) * multiple)
    new_w = max(multiple, int(round(w * ratio / multiple)) * multiple)
    return _resize_to(frame, new_w, new_h, interp)


def resize_short(frame: Frame, size: int, interp: str = "linear") -> Frame:
    h, w = frame.image.shape[:2]
    ratio = size / min(h, w)
    return _resize_to(frame, int(round(w * ratio)), int(round(h * ratio)), interp)


def center_crop(frame: Frame, width: int, height: int) -> Frame:
    h, w = frame.image.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    frame.image = frame.image[top:top + height, left:left + width]
    frame.offset_xy = (float(left), float(top))
    return frame


def rec_resize(frame: Frame, height: int, width: int, interp: str = "linear") -> Frame:
    """PaddleOCR's RecResizeImg/ClsResizeImg resize step: height fixed, width by aspect, capped."""
    h, w = frame.image.shape[:2]
    new_w = min(width, int(math.ceil(height * w / max(h, 1))))
    frame.extra["valid_width"] = max(1, new_w)
    return _resize_to(frame, max(1, new_w), height, interp)


def normalize(frame: Frame, scale: float = 1 / 255, mean: list[float] = (0.0, 0.0, 0.0),
              std: list[float] = (1.0, 1.0, 1.0)) -> Frame:
    mean_arr = np.asarray(mean, np.float32)
    inv_std = 1.0 / np.asarray(std, np.float32)
    frame.image = (frame.image.astype(np.float32) * np.float32(scale) - mean_arr) * inv_std
    return frame


def to_chw(frame: Frame) -> Frame:
    frame.image = np.ascontiguousarray(frame.image.transpose(2, 0, 1))
    return frame


def pad_width(frame: Frame, width: int) -> Frame:
    """Zero-pad a CHW tensor on the right to `width` (after normalisation, as PaddleOCR does)."""
    c, h, w = frame.image.shape
    if w < width:
        padded = np.zeros((c, h, width), np.float32)
        padded[:, :, :w] = frame.image
        frame.image = padded
    return frame


def pad_stride(frame: Frame, stride: int = 32) -> Frame:
    c, h, w = frame.image.shape
    ph, pw = int(math.ceil(h / stride) * stride), int(math.ceil(w / stride) * stride)
    if (ph, pw) != (h, w):
        padded = np.zeros((c, ph, pw), np.float32)
        padded[:, :h, :w] = frame.image
        frame.image = padded
    return frame


def resize_short_long(frame: Frame, short: int, long: int, interp: str = "linear") -> Frame:
    """PaddleDetection's keep-ratio Resize: the short side becomes `short` unless the long side
    would then pass `long` (target_size [h, w] pairs short with short, long with long)."""
    h, w = frame.image.shape[:2]
    ratio = short / min(h, w)
    if round(ratio * max(h, w)) > long:
        ratio = long / max(h, w)
    return _resize_to(frame, max(1, round(w * ratio)), max(1, round(h * ratio)), interp)


def top_down_affine(frame: Frame, width: int, height: int, interp: str = "linear") -> Frame:
    """PaddleDetection's TopDownEvalAffine on the whole frame (a person crop): one scale, set by the
    widths, with the centres aligned; what falls outside is cut, what is missing is zero.

    Top-down pose pipelines crop the person at the model's aspect ratio first, so nothing is lost.
    """
    h, w = frame.image.shape[:2]
    k = width / w
    tx, ty = width / 2 - k * w / 2, height / 2 - k * h / 2
    matrix = np.array([[k, 0.0, tx], [0.0, k, ty]], np.float32)
    frame.image = cv2.warpAffine(frame.image, matrix, (width, height), flags=INTERPOLATION[interp])
    sx, sy = frame.scale_xy
    ox, oy = frame.offset_xy
    frame.scale_xy = (sx * k, sy * k)
    frame.offset_xy = (ox * k - tx, oy * k - ty)
    return frame


OPS: dict[str, Callable[..., Frame]] = {
    "color": color, "resize": resize, "resize_limit": resize_limit, "resize_short": resize_short,
    "center_crop": center_crop, "rec_resize": rec_resize, "normalize": normalize, "to_chw": to_chw,
    "pad_width": pad_width, "pad_stride": pad_stride,
    "resize_short_long": resize_short_long, "top_down_affine": top_down_affine,
}


def checked_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Op `name`'s parameters checked against its signature and type hints (a manifest or a device config
    may say anything): an unknown or missing name, or a value of the wrong type, is a one-line BundleError
    when the pipeline loads instead of a TypeError in the middle of a frame."""
    op = OPS[name]
    signature = {key: p for key, p in inspect.signature(op).parameters.items() if key != "frame"}
    hints = get_type_hints(op)
    checked = {}
    for key, value in params.items():
        if key not in signature:
            raise BundleError(f"pre-processing op '{name}' has no parameter '{key}' (known: {', '.join(signature)})")
        try:
            checked[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as err:
            raise BundleError(f"pre-processing op '{name}': {key} = {value!r}: {err.errors()[0]['msg']}") from None
    missing = [key for key, p in signature.items() if p.default is inspect.Parameter.empty and key not in checked]
    if missing:
        raise BundleError(f"pre-processing op '{name}' needs {', '.join(missing)}")
    return checked


class Preprocess:
    """An ordered chain of ops built from a manifest's `preprocess` list."""

    def __init__(self, ops: list[dict[str, Any]], overrides: dict[str, dict[str, Any]] | None = None):
        self.steps = []
        for spec in ops:
            params = dict(spec)
            name = params.pop("op", None)
            if not isinstance(name, str) or name not in OPS:      # a manifest may hold a list there
                raise BundleError(f"unknown pre-processing op '{name}' (known: {', '.join(OPS)})")
            params.update((overrides or {}).get(name, {}))
            self.steps.append((OPS[name], checked_params(name, params)))

    def frame(self, image: np.ndarray, **overrides: dict[str, Any]) -> Frame:
        frame = Frame(image=image, src_hw=image.shape[:2])
        for op, params in self.steps:
            used = {**params, **overrides.get(op.__name__, {})}
            try:
                frame = op(frame, **used)
            except (cv2.error, ValueError, ArithmeticError, MemoryError) as err:
                # values of the right type that no picture can be processed with (a manifest may say anything:
                # a size of 0 or 10^9, three means for one channel); one line, not a traceback
                detail = " ".join(str(err).split())[:200]
                raise BundleError(f"pre-processing op '{op.__name__}' {used} cannot process a "
                                  f"{frame.image.shape[1]}x{frame.image.shape[0]} picture: {detail}") from None
        return frame

    def __call__(self, image: np.ndarray, **overrides: dict[str, Any]) -> tuple[np.ndarray, Frame]:
        """Image -> (NCHW float32 batch of one, frame with the mapping back)."""
        frame = self.frame(image, **overrides)
        return frame.image[None].astype(np.float32, copy=False), frame
