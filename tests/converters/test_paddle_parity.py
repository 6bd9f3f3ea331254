"""The Paddle parity check feeds every input a program declares, by name: a post-processed PicoDet export
also takes `scale_factor` (resized / original, [y, x]) and some take `im_shape`.

The shared models hold no post-processed export, so these tests check the feeds on a real picture run
through PicoDet's real pre-processing; the pass itself runs in every conversion of the suite.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.passes.paddle_parity import compare, model_feeds
from converters.sources import load_source
from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PICODET = SHARED / "models" / "PP-PicoDet" / "picodet_s_320_coco"
pytestmark = pytest.mark.skipif(not PICODET.is_dir(), reason=f"needs the shared models folder {SHARED}")


@pytest.fixture(scope="module")
def preprocessed():
    source = load_source(PICODET)
    image = read_image(SHARED / "images" / "coco_bus.jpg")          # 810 x 1080, resized to 320 x 320
    return Preprocess(source.spec.preprocess)(image)


def test_a_single_input_gets_the_image_under_its_own_name(preprocessed):
    tensor, frame = preprocessed
    feeds = model_feeds(["image"], tensor, frame)
    assert list(feeds) == ["image"] and feeds["image"] is tensor


def test_a_post_processed_export_gets_the_real_scale_factor_and_shape(preprocessed):
    tensor, frame = preprocessed
    feeds = model_feeds(["im_shape", "image", "scale_factor"], tensor, frame)
    height, width = frame.src_hw
    assert feeds["image"] is tensor
    np.testing.assert_allclose(feeds["scale_factor"], [[320 / height, 320 / width]], rtol=1e-6)
    assert feeds["scale_factor"].dtype == np.float32 and feeds["scale_factor"].shape == (1, 2)
    assert feeds["im_shape"].tolist() == [[320.0, 320.0]]


def test_inputs_it_cannot_feed_are_a_conversion_error(preprocessed):
    tensor, frame = preprocessed
    with pytest.raises(ConversionError, match="cannot feed the inputs"):
        model_feeds(["image", "mask"], tensor, frame)


def test_outputs_are_compared_by_position_relative_to_the_reference():
    boxes = np.array([[0, 0.9, 10, 10, 50, 50]], np.float32)
    assert compare([boxes, np.array([1])], [boxes + 0.05, np.array([1])], "detector") == pytest.approx((0.05, 0.001), rel=1e-4)
    with pytest.raises(ConversionError, match="shape"):
        compare([boxes], [boxes[:0]], "detector")


def test_an_output_that_is_all_but_zero_is_compared_in_absolute_terms():
    """PP-OCRv4 det on a photo with no text (coco_dog.jpg): Paddle's map peaks at ~5e-7 and ONNX differs by 9.1e-8;
    against its own maximum that read as 18% and refused a correct conversion. A real difference still fails."""
    reference = [np.full((1, 1, 4, 4), 5e-7, np.float32)]
    _, relative = compare(reference, [reference[0] + np.float32(9.1e-8)], "det")
    assert relative < 1e-3
    _, relative = compare(reference, [reference[0] + np.float32(1e-4)], "det")
    assert relative > 1e-3
    _, relative = compare([np.full((2,), 100.0)], [np.full((2,), 100.2)], "det")   # large outputs: relative as before
    assert relative == pytest.approx(0.002)
