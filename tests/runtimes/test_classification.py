"""PP-LCNet text-image orientation end to end: real converter, device task, converter-side family.

Bundles come from each of the export's three forms (legacy program, Paddle 3 PIR re-save, and the
trained ONNX original); they must answer alike. Orientation facts (fixture manifest): the upright
demo is '0', the upside-down demo '180', and labels name the clockwise turn of the content, so the
upright page turned 90 degrees clockwise is '90' and counter-clockwise '270'.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.families.classification import ClassificationFamily
from converters.sources import load_source
from edge.drawing import draw
from runtimes.bundle import Bundle
from runtimes.errors import BundleError
from runtimes.image import read_image
from runtimes.tasks import load_task
from runtimes.tasks.classification import top_k

from .test_detection import IMAGES, SHARED, convert

EXPORT = SHARED / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
DEMOS = ["cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg"]
needs_shared = pytest.mark.skipif(not EXPORT.is_dir(), reason=f"needs the shared models folder {SHARED}")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """The bundle made from the legacy Paddle program (the usual export)."""
    if not EXPORT.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    return convert(EXPORT, DEMOS, tmp_path_factory.mktemp("paddle-legacy"))


@pytest.fixture(scope="module")
def bundles(bundle_dir, tmp_path_factory) -> dict[str, Path]:
    """One bundle per source form of the same model."""
    others = {"paddle-pir": EXPORT / "pir", "onnx": EXPORT / "model.onnx"}
    return {"paddle-legacy": bundle_dir,
            **{form: convert(source, DEMOS, tmp_path_factory.mktemp(form)) for form, source in others.items()}}


def classify(folder: Path, image: np.ndarray) -> list[dict]:
    return load_task(Bundle.open(folder))(image).results


@needs_shared
def test_demo_pictures_get_their_orientation(bundle_dir):
    bundle = Bundle.open(bundle_dir)
    entry = bundle.manifest.model("classifier")
    assert bundle.manifest.task == "classification" and entry.labels == ["0", "90", "180", "270"]
    for picture, expected in zip(DEMOS, ["0", "180"]):
        results = classify(bundle_dir, read_image(IMAGES / picture))
        assert len(results) == entry.postprocess["topk"] == 1
        assert results[0]["label"] == expected and results[0]["score"] > 0.6
        assert json.loads(json.dumps(results)) == results


@needs_shared
def test_quarter_turns_of_the_upright_page_name_the_turn(bundle_dir):
    upright = read_image(IMAGES / "cls_img_rot0_demo.jpg")
    turns = {"90": cv2.ROTATE_90_CLOCKWISE, "180": cv2.ROTATE_180, "270": cv2.ROTATE_90_COUNTERCLOCKWISE}
    for expected, turn in turns.items():
        assert classify(bundle_dir, cv2.rotate(upright, turn))[0]["label"] == expected


@needs_shared
def test_all_three_source_forms_answer_alike(bundles):
    for picture in DEMOS:
        image = read_image(IMAGES / picture)
        answers = {form: classify(path, image)[0] for form, path in bundles.items()}
        assert len({a["label"] for a in answers.values()}) == 1, answers
        scores = [a["score"] for a in answers.values()]
        assert max(scores) - min(scores) < 1e-3, answers
    assert {Bundle.open(p).manifest.model("classifier").source_format for p in bundles.values()} == set(bundles)


@needs_shared
def test_topk_from_the_manifest_lists_every_class_best_first(bundle_dir, tmp_path):
    copy = tmp_path / "top4"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["postprocess"]["topk"] = 4
    (copy / "manifest.json").write_text(json.dumps(manifest))
    results = classify(copy, read_image(IMAGES / "cls_img_rot180_demo.jpg"))
    assert sorted(r["label"] for r in results) == ["0", "180", "270", "90"] and results[0]["label"] == "180"
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-3)   # softmax


def test_labels_that_do_not_fit_the_scores_are_refused():
    assert top_k(np.array([0.1, 0.7, 0.2]), 2, None) == [{"label": "1", "score": 0.7}, {"label": "2", "score": 0.2}]
    with pytest.raises(BundleError, match="3 scores but the bundle names 4 classes"):
        top_k(np.array([0.1, 0.7, 0.2]), 1, ["0", "90", "180", "270"])


@needs_shared
def test_banner_is_drawn_over_the_top_only(bundle_dir):
    image = read_image(IMAGES / "cls_img_rot0_demo.jpg")
    drawn = draw("classification", image, classify(bundle_dir, image))
    changed = np.any(drawn != image, axis=2)
    assert changed[:10].mean() > 0.9 and not changed[image.shape[0] // 2:].any()


# ---- the converter-side family -------------------------------------------------------------------
@needs_shared
def test_family_feeds_and_verdicts(bundle_dir, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from converters.calibration import FeedListReader

    spec = load_source(EXPORT).spec
    family = ClassificationFamily({"classifier": spec}, threads=1)
    fp32 = {"classifier": bundle_dir / "classifier.fp32.onnx"}
    pictures = [IMAGES / name for name in DEMOS]
    calib = family.calibration_feeds("classifier", fp32, pictures, limit=16)
    timing = family.latency_feeds("classifier", fp32, pictures, limit=16)
    assert len(calib) == 8 and len(timing) == 8                      # 4 views and 4 quarter turns of each
    assert all(f["x"].shape == (1, 3, 224, 224) for f in calib + timing)
    assert not any(np.allclose(c["x"], t["x"]) for c in calib for t in timing)
    same = family.evaluate("classifier", fp32, fp32["classifier"], pictures)
    assert same.passed and same.value == 1.0 and same.samples == 8

    prepared, int8 = tmp_path / "pre.onnx", tmp_path / "int8.onnx"
    quant_pre_process(str(fp32["classifier"]), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(int8), FeedListReader(calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    verdict = family.evaluate("classifier", fp32, int8, pictures)
    # the two demos are clear cases (FP32 scores ~0.9): INT8 LCNet keeps every answer
    assert verdict.metric == "top1_agreement vs fp32" and verdict.budget == 1.0
    assert verdict.value == 1.0 and verdict.passed and verdict.samples == 8
