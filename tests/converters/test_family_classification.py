"""The classification family judges a candidate on every picture in all four quarter turns.

Real PP-LCNet text-orientation model (the ONNX original of the shared export) and real text pictures.
An orientation classifier exists to tell the turns apart, so the family's check must show it all
four: the FP32 model's answers over the four views of one upright picture are the four classes.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from converters.families import family_for
from converters.sources import load_source

EXPORT = "PP-LCNet/PPLCNet_x1_0_text_image_orientation"
PICTURES = ("cls_img_rot0_demo.jpg", "ocr_11.jpg")


@pytest.fixture(scope="module")
def orientation(shared_dir: Path):
    source = load_source(shared_dir / "models" / EXPORT)
    family = family_for("classification", {"classifier": source.spec})
    fp32 = {"classifier": shared_dir / "models" / EXPORT / "model.onnx"}
    return family, fp32, [shared_dir / "images" / name for name in PICTURES], source.spec.labels


def test_evaluation_covers_four_turns_of_every_picture(orientation):
    family, fp32, images, _ = orientation
    verdict = family.evaluate("classifier", fp32, fp32["classifier"], images)
    assert verdict.samples == 4 * len(images)
    assert verdict.value == 1.0 and verdict.passed          # the reference agrees with itself


def test_fp32_tells_the_four_turns_of_an_upright_picture_apart(orientation):
    family, fp32, images, labels = orientation
    feeds = family._feeds(fp32["classifier"], images[:1], "evaluation")
    classes = family._classes(fp32["classifier"], feeds)
    # views are: as is, turned 90 degrees clockwise, 180, 270; the labels name the clockwise turn
    assert [labels[c] for c in classes] == ["0", "90", "180", "270"]

