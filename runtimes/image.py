"""Decoding input images as they come from the field, refusing corrupt, truncated and oversized files.

OpenCV decodes (it turns 16-bit, grayscale, palette and CMYK pictures into 8-bit BGR and applies the
EXIF rotation); Pillow only reads the header first, so that a picture's size is known before a single
pixel is decoded: a decompression bomb is refused, and an oversized JPEG is decoded at 1/2, 1/4 or 1/8
of its size by libjpeg's DCT scaling, which never holds the full-size picture. Pictures with an alpha
channel are composited onto the background that keeps their content visible.
"""
from __future__ import annotations

import io
import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# The most pixels decoded at full size: 120 MB as 8-bit BGR (240 MB for 16-bit with alpha on the way), a
# bound a 1 GB Raspberry Pi survives beside the models. Every model resizes to about a megapixel anyway.
MAX_PIXELS = 40_000_000
# libjpeg decodes straight at these fractions of the size (IMREAD_REDUCED_*), for oversized JPEGs.
_REDUCED_JPEG = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))
_BLEND_ROWS = 512        # alpha compositing in bands of rows: bounded temporary memory
# edge bounds the size itself (MAX_PIXELS) before anything is decoded; Pillow's own check would refuse
# to even read the header of the big JPEGs edge decodes reduced.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Header:
    """What the file says about itself, before decoding."""
    format: str                 # Pillow's name: JPEG, PNG, WEBP, TIFF, ...
    width: int
    height: int
    alpha: bool                 # an alpha channel or a transparent colour
    pages: int                  # TIFF pages (1 for everything else)
    progressive: bool           # a progressive JPEG (libjpeg buffers all of it, even when scaling)
    orientation: int            # EXIF orientation, 1 = as stored


def _truncation(data: bytes) -> str | None:
    """libjpeg/libpng decode a cut-off file into a half-grey picture without failing; catch it here."""
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-1024:]:
        return "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def read_header(data: bytes) -> Header | None:
    """The header of an encoded picture; None when Pillow does not know the format (OpenCV may)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # Pillow warns about odd but readable headers
            with Image.open(io.BytesIO(data)) as image:
                alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
                pages = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
                orientation = image.getexif().get(0x0112, 1) if alpha else 1   # only the alpha path needs it
                return Header(image.format or "?", image.width, image.height, alpha, pages,
                              bool(image.info.get("progressive")), orientation)
    except Exception:      # noqa: BLE001 - a format or header Pillow cannot read: OpenCV decides, within its limits
        return None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of an encoded image -> HxWx3 uint8 BGR array."""
    if not data:
        raise ImageError(f"{name}: empty file")
    problem = _truncation(data)
    if problem:
        raise ImageError(f"{name}: {problem}")
    header = read_header(data)
    flags = _decode_flags(header, name)
    with _opencv_quiet():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable image")
    if header is None and image.shape[0] * image.shape[1] > MAX_PIXELS:   # a format only OpenCV knows
        raise ImageError(_too_big(name, image.shape[1], image.shape[0]))
    if header is not None and header.pages > 1:
        log.warning("%s: a TIFF of %d pages; only the first page is read", name, header.pages)
    if flags == cv2.IMREAD_UNCHANGED:
        image = _to_bgr(image, name, header.orientation if header else 1)
    return image


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved = 0


@contextmanager
def _opencv_quiet():
    """OpenCV's own log silenced while it decodes: of a corrupt file its decoders print several [ERROR] lines
    to stderr ("TIFFFillStrip: Read error", "can't read data"); edge says what happened in one line instead.
    Counted, so decodes in several threads at once restore the level the process had."""
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_quiet_saved)


def _decode_flags(header: Header | None, name: str) -> int:
    """IMREAD_COLOR (OpenCV converts and rotates), IMREAD_UNCHANGED to keep alpha, or a reduced JPEG decode."""
    if header is None:
        return cv2.IMREAD_COLOR
    pixels = header.width * header.height
    if pixels <= MAX_PIXELS:
        return cv2.IMREAD_UNCHANGED if header.alpha else cv2.IMREAD_COLOR
    if header.format in ("JPEG", "MPO") and not header.progressive:
        for factor, flag in _REDUCED_JPEG:
            if pixels <= MAX_PIXELS * factor * factor:
                log.warning("%s: %dx%d pixels is more than the %d MP decoded at full size; decoded at 1/%d "
                            "(%dx%d), and result coordinates are in that size", name, header.width,
                            header.height, MAX_PIXELS // 10**6, factor, -(-header.width // factor),
                            -(-header.height // factor))
                return flag
    raise ImageError(_too_big(name, header.width, header.height))


def _too_big(name: str, width: int, height: int) -> str:
    return (f"{name}: {width}x{height} pixels is more than the {MAX_PIXELS // 10**6} megapixels edge decodes "
            "(a baseline JPEG up to 64 times that is decoded reduced); scale the picture down first")


def _to_bgr(image: np.ndarray, name: str, orientation: int) -> np.ndarray:
    """An IMREAD_UNCHANGED decode (any depth, 1-4 channels) -> oriented 8-bit BGR, alpha composited."""
    image = _to_8bit(image, name)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):
        colour, alpha = image[:, :, :-1], image[:, :, -1]
        image = composite(colour if channels == 4 else np.repeat(colour, 3, axis=2), alpha)
    elif channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return _orient(image, orientation)


def _to_8bit(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:          # the top byte, as OpenCV's IMREAD_COLOR does
        return (image >> 8).astype(np.uint8)
    if image.dtype in (np.float32, np.float64):   # float TIFFs: 0..1 by convention
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    raise ImageError(f"{name}: {image.dtype} samples are not supported (8-bit, 16-bit or float pictures are)")


def background_for(colour: np.ndarray, alpha: np.ndarray) -> int:
    """White behind dark content, black behind light content: the grey level that keeps what is opaque
    visible (dark text on a transparent sheet reads as no text at all on black, and white text on white)."""
    step = max(1, int(np.sqrt(alpha.size / 250_000)))   # a quarter-million samples judge the content
    weight = alpha[::step, ::step].astype(np.float32)
    if float(weight.sum()) == 0.0:
        return 255
    grey = cv2.cvtColor(np.ascontiguousarray(colour[::step, ::step]), cv2.COLOR_BGR2GRAY).astype(np.float32)
    return 255 if float((grey * weight).sum() / weight.sum()) < 128.0 else 0


def composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """BGR over the contrasting background by alpha, exact in integers, in bands of rows."""
    level = background_for(colour, alpha)
    out = np.empty(colour.shape, np.uint8)
    for top in range(0, colour.shape[0], _BLEND_ROWS):
        rows = slice(top, top + _BLEND_ROWS)
        a = alpha[rows, :, None].astype(np.uint16)
        blend = colour[rows].astype(np.uint16) * a + level * (255 - a) + 127
        out[rows] = blend // 255
    return out


_ORIENTATIONS = {2: lambda im: cv2.flip(im, 1), 3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
                 4: lambda im: cv2.flip(im, 0), 5: lambda im: cv2.transpose(im),
                 6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
                 7: lambda im: cv2.rotate(cv2.transpose(im), cv2.ROTATE_180),
                 8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE)}


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF rotation OpenCV applies itself with IMREAD_COLOR, for the alpha path that cannot use it."""
    turn = _ORIENTATIONS.get(orientation)
    return turn(image) if turn else image


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err.strerror})") from None
    return decode_image(data, str(path))
