"""Decoding input images, refusing corrupt and truncated files instead of guessing."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _truncation(data: bytes) -> str | None:
    """libjpeg/libpng decode a cut-off file into a half-grey picture without failing; catch it here."""
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-1024:]:
        return "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of an encoded image -> HxWx3 uint8 BGR array."""
    if not data:
        raise ImageError(f"{name}: empty file")
    problem = _truncation(data)
    if problem:
        raise ImageError(f"{name}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable image")
    return image


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err.strerror})") from None
    return decode_image(data, str(path))
