"""A real small bundle for tests and benches that load the daemon rather than a model: PP-LCNet text
orientation as ONNX FP32 (the real `edge convert`, about 5 s), made once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SHARED_DIR, convert_bundle, write_fp32_profile

LCNET_EXPORT = SHARED_DIR / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
CALIBRATION = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "coco_bus.jpg")


def lcnet_fp32_bundle(work: Path) -> Path:
    """The bundle under `work` (converted on the first call, reused after)."""
    out = work / "lcnet-fp32"
    if (out / "manifest.json").is_file():
        return out
    work.mkdir(parents=True, exist_ok=True)
    calib = work / "lcnet-calib"
    calib.mkdir(exist_ok=True)
    for name in CALIBRATION:
        shutil.copyfile(SHARED_DIR / "images" / name, calib / name)
    return convert_bundle(out, [LCNET_EXPORT], write_fp32_profile(work), calib)
