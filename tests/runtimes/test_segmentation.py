"""PP-HumanSeg-Lite end to end: the real converter makes the bundle, the device task finds the person.

The bundle is made by `edge convert` (in-process) from the Paddle export, with a profile that asks only for ONNX FP32.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import write_fp32_profile

from converters.families.segmentation import SegmentationFamily, _calibration_views
from runtimes.bundle import Bundle
from runtimes.errors import BundleError
from runtimes.image import read_image
from runtimes.tasks import load_task, rle
from runtimes.tasks.preprocess import Frame
from runtimes.tasks.segmentation import SegParams, label_map

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EXPORT = SHARED / "models" / "PP-HumanSeg-Lite" / "pp_humanseg_lite_portrait_398x224"
PORTRAIT = SHARED / "images" / "seg_humanseg_demo.jpg"
OTHER_HUMANS = [SHARED / "images" / "lite_human.jpg", SHARED / "images" / "seg_web_human.png"]
needs_shared = pytest.mark.skipif(not EXPORT.is_dir(), reason=f"needs the shared models folder {SHARED}")



@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory) -> Path:
    if not EXPORT.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    from edge.cli import main

    work = tmp_path_factory.mktemp("humanseg")
    profile = write_fp32_profile(work)
    val = work / "val"
    val.mkdir()
    for image in [PORTRAIT, *OTHER_HUMANS]:
        shutil.copy(image, val / image.name)
    out = work / "bundle"
    code = main(["convert", str(EXPORT), "--profile", str(profile), "--val", str(val), "-o", str(out),
                 "--quiet"])
    assert code == 0, "edge convert failed (its one-line error is above)"
    return out


@needs_shared
def test_portrait_gives_one_person_mask_where_the_person_is(seg_bundle):
    bundle = Bundle.open(seg_bundle)
    entry = bundle.manifest.model("segmenter")
    assert bundle.manifest.task == "segmentation" and entry.selected_artifact().precision == "fp32"
    image = read_image(PORTRAIT)
    results = load_task(bundle)(image).results
    assert [r["label"] for r in results] == ["person"]
    person = results[0]
    mask = rle.decode(person["mask"])
    assert person["mask"]["size"] == list(image.shape[:2]) == list(mask.shape)
    assert isinstance(person["mask"]["counts"], str)
    # the fixture's own measurement of this model on this picture: 25% foreground
    assert 0.2 < person["area_ratio"] < 0.3
    assert person["area_ratio"] == pytest.approx(mask.mean(), abs=1e-4)
    width = image.shape[1]
    centre = mask[:, int(width * 0.45):int(width * 0.55)].mean()
    borders = np.concatenate([mask[:, :width // 10], mask[:, -(width // 10):]], axis=1).mean()
    assert centre > 0.4 and borders < 0.15 and centre > 3 * borders
    x1, y1, x2, y2 = person["box"]
    ys, xs = np.nonzero(mask)
    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert json.loads(json.dumps(results)) == results   # publishable as it is


@needs_shared
def test_mask_can_be_switched_off_in_the_manifest(seg_bundle, tmp_path):
    copy = tmp_path / "nomask"
    shutil.copytree(seg_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["postprocess"]["mask"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    results = load_task(Bundle.open(copy))(read_image(PORTRAIT)).results
    assert [r["label"] for r in results] == ["person"] and "mask" not in results[0]
    assert 0.2 < results[0]["area_ratio"] < 0.3


@needs_shared
def test_an_invalid_postprocess_value_is_refused_with_the_model_named(seg_bundle, tmp_path):
    copy = tmp_path / "wrongkind"
    shutil.copytree(seg_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["postprocess"]["threshold"] = 1.5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        load_task(Bundle.open(copy))
    assert "threshold" in str(err.value) and "segmenter" in str(err.value)


@needs_shared
def test_family_judges_the_trained_onnx_original_equal_to_the_converted_fp32(seg_bundle):
    from converters.sources import load_source

    family = SegmentationFamily({"segmenter": load_source(EXPORT).spec}, threads=1)
    fp32 = {"segmenter": seg_bundle / "segmenter.fp32.onnx"}
    images = [PORTRAIT, *OTHER_HUMANS]
    same = family.evaluate("segmenter", fp32, fp32["segmenter"], images)
    assert same.value == 1.0 and same.passed and same.samples >= len(images)
    # the H/W-dynamic ONNX the Paddle files were converted from: a different artifact, same answers
    original = family.evaluate("segmenter", fp32, EXPORT / "model.onnx", images)
    assert original.passed and original.value > 0.99, original.describe()
    calib = family.calibration_feeds("segmenter", fp32, images, limit=4)
    evals = family.latency_feeds("segmenter", fp32, images, limit=10)
    assert len(calib) == 4 and all(f["x"].shape == (1, 3, 224, 398) for f in calib + evals)
    assert not any(np.array_equal(c["x"], e["x"]) for c in calib for e in evals)


@needs_shared
def test_drawing_tints_the_mask_and_nothing_else(seg_bundle):
    from edge.drawing import mask as mask_drawing

    image = read_image(PORTRAIT)
    before = image.copy()
    results = load_task(Bundle.open(seg_bundle))(image).results
    drawn = mask_drawing.draw(image, results)
    assert np.array_equal(image, before) and drawn.shape == image.shape
    person = rle.decode(results[0]["mask"])
    inner = cv2.erode(person.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    outer = ~cv2.dilate(person.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    outer[:40] = False                                 # the caption sits in the top rows
    changed = np.any(drawn != image, axis=2)
    assert changed[inner].mean() > 0.95 and changed[outer].mean() < 0.01


def test_calibration_views_differ_from_the_picture():
    picture = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    mirrored, crop = _calibration_views(picture)
    assert np.array_equal(mirrored[:, ::-1], picture) and crop.shape == (30, 45, 3)


def test_label_map_ignores_padding_and_keeps_the_threshold():
    # a 2-class probability map over a 64x64 input whose picture filled only the left 48 columns
    # (keep-ratio resize, then padding): the padded columns must not be stretched into the picture
    probs = np.zeros((2, 64, 64), np.float32)
    probs[1, :, 24:48] = 0.9           # right half of the picture is foreground
    probs[1, :, 48:] = 0.95            # padding: would leak in if it were resized along
    probs[0] = 1 - probs[1]
    frame = Frame(image=np.zeros((3, 64, 64), np.float32), src_hw=(64, 48), scale_xy=(1.0, 1.0))
    labels = label_map(probs, frame, (64, 64), SegParams())
    assert labels.shape == (64, 48)
    assert labels[:, :23].sum() == 0 and labels[:, 25:].all()
    strict = label_map(probs, frame, (64, 64), SegParams(threshold=0.95))
    assert strict.sum() == 0


def test_argmax_exports_are_resized_without_mixing_classes():
    classes = np.zeros((1, 8, 8), np.int64)
    classes[0, 2:6, 2:6] = 3
    frame = Frame(image=np.zeros((3, 8, 8), np.float32), src_hw=(32, 32), scale_xy=(0.25, 0.25))
    labels = label_map(classes, frame, (8, 8), SegParams(output="argmax"))
    assert labels.shape == (32, 32) and set(np.unique(labels).tolist()) == {0, 3}
    assert labels[8:24, 8:24].all() and labels.sum() == 3 * 16 * 16


def test_logits_with_more_classes_take_the_argmax_of_resized_maps():
    logits = np.stack([np.full((4, 4), 1.0), np.zeros((4, 4)), np.zeros((4, 4))]).astype(np.float32)
    logits[2, :, 2:] = 5.0
    frame = Frame(image=np.zeros((3, 4, 4), np.float32), src_hw=(16, 16), scale_xy=(0.25, 0.25))
    labels = label_map(logits, frame, (4, 4), SegParams(output="logits"))
    resized_left = cv2.resize(logits[2], (16, 16), interpolation=cv2.INTER_LINEAR)
    assert set(np.unique(labels).tolist()) == {0, 2}
    assert np.array_equal(labels == 2, resized_left > 1.0)
