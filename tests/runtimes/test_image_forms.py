"""Pictures as they come from the field, each made from one real picture and run through the real OCR bundle.

Every form (16-bit PNG and TIFF, grayscale, palette, CMYK JPEG, EXIF rotation, WebP, multi-page TIFF, alpha)
must give the results of its plain 8-bit RGB equivalent; dark and light text on a transparent sheet must
both read; an oversized picture or a decompression bomb must end in an ImageError or a bounded downscale,
with the peak memory of the decoding process measured in a process of its own.
"""
from __future__ import annotations

import io
import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtimes.bundle import Bundle
from runtimes.errors import ImageError
from runtimes.image import MAX_PIXELS, decode_image, read_header
from runtimes.tasks import load_task

REPO = Path(__file__).resolve().parents[2]
PICTURE = "ocr_11.jpg"          # a label with 16 lines of Chinese and Latin text


@pytest.fixture(scope="module")
def ocr(ocr_bundle_dir):
    task = load_task(Bundle.open(ocr_bundle_dir))
    return lambda data: task(decode_image(data)).results


@pytest.fixture(scope="module")
def picture(shared_dir) -> Image.Image:
    return Image.open(shared_dir / "images" / PICTURE).convert("RGB")


def encoded(image: Image.Image, form: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, form, **options)
    return out.getvalue()


def cv2_encoded(suffix: str, array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(suffix, array)
    assert ok
    return data.tobytes()


def texts(results: list[dict]) -> list[str]:
    return sorted(item["text"] for item in results)


def lossless_forms(picture: Image.Image) -> dict[str, tuple[bytes, bytes]]:
    """form -> (its bytes, the plain 8-bit RGB PNG of the same picture): they must decode to the same pixels."""
    rgb = encoded(picture, "PNG")
    bgr16 = np.asarray(picture)[:, :, ::-1].astype(np.uint16) * 257
    gray, palette = picture.convert("L"), picture.convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "16-bit PNG": (cv2_encoded(".png", bgr16), rgb),
        "16-bit TIFF": (cv2_encoded(".tiff", bgr16), rgb),
        "WebP (lossless)": (encoded(picture, "WEBP", lossless=True), rgb),
        "multi-page TIFF": (encoded(picture, "TIFF", save_all=True, append_images=[picture.rotate(90)]), rgb),
        "opaque RGBA PNG": (encoded(picture.convert("RGBA"), "PNG"), rgb),
        "grayscale PNG": (encoded(gray, "PNG"), encoded(gray.convert("RGB"), "PNG")),
        "palette PNG": (encoded(palette, "PNG"), encoded(palette.convert("RGB"), "PNG")),
    }


def test_every_lossless_form_decodes_to_its_rgb_equivalent_and_reads_the_same(picture, ocr, caplog):
    baseline = ocr(encoded(picture, "PNG"))
    assert len(baseline) >= 10
    for form, (data, plain) in lossless_forms(picture).items():
        with caplog.at_level(logging.WARNING, logger="runtimes.image"):
            image = decode_image(data, form)
        assert np.array_equal(image, decode_image(plain)), form
        assert ocr(data) == ocr(plain), form
    assert "multi-page TIFF: a TIFF of 2 pages; only the first page is read" in caplog.messages


def test_cmyk_jpeg_reads_like_an_independent_decoders_rgb(picture, ocr):
    data = encoded(picture.convert("CMYK"), "JPEG", quality=95)
    assert read_header(data).format == "JPEG"
    pillow_rgb = Image.open(io.BytesIO(data)).convert("RGB")   # Pillow's own CMYK decode, not OpenCV's
    ours = decode_image(data)[:, :, ::-1].astype(int)
    assert np.abs(ours - np.asarray(pillow_rgb, int)).mean() < 1.0
    assert texts(ocr(data)) == texts(ocr(encoded(pillow_rgb, "PNG")))


# Pillow's transpose that makes the stored picture from the displayed one, per EXIF orientation.
STORED_FROM_SHOWN = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                     7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])      # OpenCV rotates the first, edge the alpha path itself
def test_exif_orientation_is_applied_with_and_without_alpha(picture, mode):
    shown = picture.crop((0, 0, 500, 380)).convert(mode)          # not square: a wrong turn changes the shape
    expected = decode_image(encoded(shown.convert("RGB"), "PNG"))
    for orientation, turn in STORED_FROM_SHOWN.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = shown if turn is None else shown.transpose(turn)
        assert np.array_equal(decode_image(encoded(stored, "PNG", exif=exif.tobytes())), expected), orientation


def test_exif_rotated_jpeg_reads_like_the_upright_picture(picture, ocr):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(picture.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=100, exif=exif.tobytes())
    assert texts(ocr(data)) == texts(ocr(encoded(picture, "PNG")))


def transparent_sheet(picture: Image.Image, ink: int, depth: type = np.uint8) -> np.ndarray:
    """The picture's darkness as opacity over one `ink` colour: text printed on a transparent sheet (BGRA)."""
    darkness = 255 - np.asarray(picture.convert("L"))
    sheet = np.dstack([np.full_like(darkness, ink)] * 3 + [darkness]).astype(depth)
    return sheet * 257 if depth == np.uint16 else sheet


def test_dark_text_on_transparent_reads_as_on_white_paper(picture, ocr):
    on_paper = ocr(encoded(picture.convert("L").convert("RGB"), "PNG"))
    assert len(on_paper) >= 10
    for depth in (np.uint8, np.uint16):
        data = cv2_encoded(".png", transparent_sheet(picture, 0, depth))
        assert ocr(data) == on_paper, depth
        # what dropping alpha gave: black ink on black, no text at all
        assert load_plain_decode(data).max() == 0
    la = encoded(Image.fromarray(transparent_sheet(picture, 0)[:, :, 2:], "LA"), "PNG")
    assert ocr(la) == on_paper


def load_plain_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_light_text_on_transparent_reads_as_on_black(picture, ocr):
    inverted = Image.fromarray(255 - np.asarray(picture.convert("L"))).convert("RGB")
    on_black = ocr(encoded(inverted, "PNG"))
    data = cv2_encoded(".png", transparent_sheet(picture, 255))
    assert load_plain_decode(data).min() == 255          # dropping alpha: white on white
    assert ocr(data) == on_black and len(on_black) >= 10


# --- oversized pictures: decoded in a process of their own, to measure its peak memory -------------------

DECODE = """
import json, resource, sys
from runtimes.errors import ImageError
from runtimes.image import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    shape, error = list(read_image(sys.argv[1]).shape), None
except ImageError as err:
    shape, error = None, str(err)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": shape, "error": error, "before_mb": before / 1024, "peak_mb": peak / 1024}))
"""


def decode_elsewhere(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", DECODE, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    outcome = json.loads(proc.stdout)
    outcome["log"] = proc.stderr
    print(f"\n[image] {path.name}: {outcome['shape'] or outcome['error']}; peak RSS {outcome['peak_mb']:.0f} MB "
          f"({outcome['before_mb']:.0f} MB after imports)")
    return outcome


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A real PNG of `width` x `height` grey zeros, compressed row by row (a few hundred kB on disk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate = zlib.compressobj(9)
    row = bytes(width + 1)                    # filter byte + a row of zeros
    body = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)      # 400 MP: 1.2 GB as BGR, 0.4 MB on disk
    outcome = decode_elsewhere(bomb)
    assert outcome["shape"] is None and "20000x20000 pixels is more than the" in outcome["error"]
    assert outcome["peak_mb"] - outcome["before_mb"] < 50


def test_an_oversized_jpeg_is_decoded_reduced_within_bounded_memory(tmp_path, picture):
    width, height = 12000, 9000           # 108 MP: 324 MB as BGR; decoded at 1/2, 81 MB
    assert width * height > MAX_PIXELS
    big = cv2.resize(np.asarray(picture)[:, :, ::-1], (width, height), interpolation=cv2.INTER_NEAREST)
    baseline, progressive = tmp_path / "big.jpg", tmp_path / "big_progressive.jpg"
    assert cv2.imwrite(str(baseline), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert cv2.imwrite(str(progressive), big, [cv2.IMWRITE_JPEG_QUALITY, 80, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    del big
    reduced = decode_elsewhere(baseline)
    assert reduced["shape"] == [height // 2, width // 2, 3]
    assert "decoded at 1/2 (6000x4500)" in reduced["log"]
    assert reduced["peak_mb"] - reduced["before_mb"] < 200       # a full-size decode alone is 324 MB
    # libjpeg keeps every coefficient of a progressive JPEG even when it scales: refused instead
    refused = decode_elsewhere(progressive)
    assert refused["shape"] is None and "12000x9000 pixels" in refused["error"]
    assert refused["peak_mb"] - refused["before_mb"] < 50


def test_a_corrupt_header_is_an_image_error(tmp_path):
    data = bytearray(encoded(Image.new("RGB", (64, 48), "white"), "PNG"))
    data[16:24] = struct.pack(">II", 0, 0)            # IHDR says 0x0
    with pytest.raises(ImageError):
        decode_image(bytes(data), "zero.png")
