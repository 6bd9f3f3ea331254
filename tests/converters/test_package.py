"""The sample pictures a bundle ships for `edge bench`: a few of the judging pictures, spread over the list,
as they are, or downscaled when large."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from converters.package import SAMPLE_SIDE, SAMPLES, _copy_samples
from runtimes.bundle import sha256_of

IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "images"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"needs the shared pictures {IMAGES}")


def test_samples_are_spread_over_the_judging_pictures_and_large_ones_downscaled(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    names = ["cls_img_rot0_demo.jpg", "coco_dog.jpg", "det_layout.jpg", "lite_human.jpg", "ocr_11.jpg",
             "seg_web_human.png"]
    pictures = [shutil.copy(IMAGES / name, folder / name) for name in names]
    big = cv2.imread(str(IMAGES / "ocr_1.jpg"))                     # 1150 x 720, made 2300 x 1440
    cv2.imwrite(str(folder / "zz_page.png"), cv2.resize(big, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    pictures = [Path(p) for p in pictures] + [folder / "zz_page.png"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()

    listed = _copy_samples(bundle, pictures)

    assert len(listed) == SAMPLES
    assert listed[0].path == "samples/cls_img_rot0_demo.jpg" and listed[-1].path == "samples/zz_page.jpg"
    for item in listed[:-1]:                                        # small enough: the very bytes judged
        assert sha256_of(bundle / item.path) == sha256_of(folder / Path(item.path).name) == item.sha256
    page = cv2.imread(str(bundle / listed[-1].path))
    assert max(page.shape[:2]) == SAMPLE_SIDE and page.shape[:2] == (1600, round(1440 * 1600 / 2300))
    assert (bundle / listed[-1].path).read_bytes()[:2] == b"\xff\xd8"          # a JPEG
    assert _copy_samples(tmp_path / "none", []) == []
