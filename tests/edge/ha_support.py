"""Shared by the Home Assistant tests: a real PP-PicoDet bundle (ONNX FP32, converted in a few seconds)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, write_fp32_profile

PICODET = "models/PP-PicoDet/picodet_s_320_coco/model.onnx"


def convert_picodet(shared_dir: Path, out: Path) -> Path:
    profile = write_fp32_profile(out.parent)
    convert = subprocess.run(
        [sys.executable, "-m", "edge", "convert", str(shared_dir / PICODET), "--profile", str(profile),
         "--val", str(shared_dir / "images"), "-o", str(out), "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if convert.returncode != 0:
        pytest.fail(f"edge convert failed: {convert.stderr[-1500:]}", pytrace=False)
    return out
