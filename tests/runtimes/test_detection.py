"""PP-PicoDet end to end: the real converter makes the bundles, the device task finds the objects.

Bundles are made by `edge convert` (in-process) from the official-format Paddle exports, with a profile that asks only for ONNX
FP32. Expected outcomes are what the fixture manifest measured on these pictures (bus scene: 4
people and a bus; kite scene: 8 people and a kite; layout page: 7 text, 3 title, 2 table, 1 figure
blocks), checked as label sets, counts in ranges and box geometry.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fp32_profile

from converters.families.detection import DetectionFamily
from converters.sources import load_source
from edge.drawing import draw
from runtimes.bundle import Bundle
from runtimes.errors import BundleError
from runtimes.image import read_image
from runtimes.tasks import load_task
from runtimes.tasks.detection import (DetectionParams, decode_detections, detector_feeds, image_input,
                                      output_form, to_source)
from runtimes.tasks.nms import multiclass_nms, nms
from runtimes.tasks.preprocess import Preprocess

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PICODET = SHARED / "models" / "PP-PicoDet"
IMAGES = SHARED / "images"
needs_shared = pytest.mark.skipif(not PICODET.is_dir(), reason=f"needs the shared models folder {SHARED}")

COCO_PICTURES = ["coco_bus.jpg", "det_000000014439.jpg", "coco_dog.jpg", "coco_zidane.jpg"]


def convert(source: Path, pictures: list[str], work: Path) -> Path:
    """`edge convert SOURCE --profile <fp32 only> --val <pictures> -o work/bundle`, in-process."""
    from edge.cli import main

    profile = write_fp32_profile(work)
    val = work / "val"
    val.mkdir()
    for name in pictures:
        shutil.copy(IMAGES / name, val / name)
    out = work / "bundle"
    code = main(["convert", str(source), "--profile", str(profile), "--val", str(val), "-o", str(out),
                 "--quiet"])
    assert code == 0, "edge convert failed (its one-line error is above)"
    return out


@pytest.fixture(scope="module")
def coco_bundle(tmp_path_factory) -> Path:
    if not PICODET.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    return convert(PICODET / "picodet_s_320_coco", COCO_PICTURES, tmp_path_factory.mktemp("picodet_coco"))


@pytest.fixture(scope="module")
def layout_bundle(tmp_path_factory) -> Path:
    """From the Paddle 3 PIR re-save (the COCO bundle comes from the legacy program)."""
    if not PICODET.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    return convert(PICODET / "picodet_lcnet_layout_cdla" / "pir", ["det_layout.jpg", "ocr_11.jpg"],
                   tmp_path_factory.mktemp("picodet_layout"))


def detect(bundle_dir: Path, picture: str) -> tuple[list[dict], np.ndarray]:
    image = read_image(IMAGES / picture)
    return load_task(Bundle.open(bundle_dir))(image).results, image


def check_well_formed(results: list[dict], image: np.ndarray, threshold: float) -> None:
    h, w = image.shape[:2]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, r
        assert threshold < r["score"] <= 1.0
    assert json.loads(json.dumps(results)) == results     # publishable as it is


# ---- NMS -----------------------------------------------------------------------------------------
def test_nms_drops_a_weaker_overlapping_box_and_keeps_a_distant_one():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)   # IoU(0, 1) = 81/119
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]          # 0.68 overlap is allowed at 0.7
    assert nms(boxes, scores, 0.5, top_k=1).tolist() == [0]


def test_multiclass_nms_suppresses_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32)
    # box 1 is a weaker duplicate of box 0 for class 0, but the only box of class 1
    scores = np.array([[0.9, 0.1], [0.8, 0.6]], np.float32)
    found = multiclass_nms(boxes, scores, score_threshold=0.3, nms_threshold=0.5)
    assert found.classes.tolist() == [0, 1] and found.scores.tolist() == pytest.approx([0.9, 0.6])
    assert found.boxes[1].tolist() == [1, 1, 11, 11]
    assert len(multiclass_nms(boxes, scores, 0.3, 0.5, keep_top_k=1)) == 1
    assert len(multiclass_nms(boxes, scores, 0.95, 0.5)) == 0         # nothing scores above


# ---- inputs and output forms ---------------------------------------------------------------------
def test_feeds_give_neutral_scale_factor_and_the_input_shape():
    tensor = np.zeros((1, 3, 320, 416), np.float32)
    feeds = detector_feeds(["im_shape", "image", "scale_factor"], tensor)
    assert feeds["image"] is tensor
    assert feeds["scale_factor"].tolist() == [[1.0, 1.0]] and feeds["im_shape"].tolist() == [[320.0, 416.0]]
    with pytest.raises(BundleError, match="one image input"):
        image_input(["image", "mask"])


def test_unknown_output_shapes_are_refused_with_what_was_seen():
    params = DetectionParams(fpn_stride=[8, 16, 32, 64])
    with pytest.raises(BundleError, match=r"\[1, 7\].*match no known"):
        output_form([np.zeros((1, 7), np.float32)], params)


@needs_shared
def test_all_three_export_forms_give_the_same_objects(coco_bundle):
    """The raw-head outputs of the real model, decoded; then the same detections presented as a
    post-processed export (boxes + scores, with weaker near-duplicates that NMS must remove) and
    as an NMS export (rows + count, padded): all three forms must report the same objects."""
    bundle = Bundle.open(coco_bundle)
    entry = bundle.manifest.model("detector")
    params = DetectionParams.model_validate(entry.postprocess)
    tensor, frame = Preprocess(entry.preprocess)(read_image(IMAGES / "coco_bus.jpg"))
    import onnxruntime as ort
    outputs = ort.InferenceSession(str(coco_bundle / entry.selected), providers=["CPUExecutionProvider"]).run(
        None, {entry.input.name: tensor})
    assert output_form(outputs, params) == "raw_head"
    raw = decode_detections(outputs, frame, tensor.shape[2:], params, entry.labels,
                            threshold=params.score_threshold)
    assert {r["label"] for r in raw} >= {"person", "bus"}

    # the same detections back in input pixels, with shifted duplicates scoring 20% lower
    sx, sy = frame.scale_xy
    boxes = np.array([r["box"] for r in raw], np.float32) * [sx, sy, sx, sy]
    classes = np.array([entry.labels.index(r["label"]) for r in raw])
    best = np.array([r["score"] for r in raw], np.float32)
    all_boxes = np.concatenate([boxes, boxes + 2.0])
    scores = np.zeros((len(entry.labels), len(all_boxes)), np.float32)
    scores[classes, np.arange(len(raw))] = best
    scores[classes, len(raw) + np.arange(len(raw))] = best * 0.8
    post = [all_boxes[None], scores[None]]
    assert output_form(post, params) == "boxes_scores"
    rows = np.concatenate([np.stack([classes, best], axis=1), boxes], axis=1).astype(np.float32)
    rows = np.concatenate([rows, [[-1, 0, 0, 0, 0, 0]]]).astype(np.float32)
    nms_form = [rows, np.array([len(rows)], np.int32)]
    assert output_form(nms_form, params) == "nms"

    for other in (post, nms_form):
        again = decode_detections(other, frame, tensor.shape[2:], params, entry.labels)
        shown = [r for r in raw if r["score"] > params.draw_threshold]
        assert [r["label"] for r in again] == [r["label"] for r in shown]
        for a, b in zip(again, shown):
            assert a["box"] == pytest.approx(b["box"], abs=0.2) and a["score"] == pytest.approx(b["score"], abs=1e-4)


# ---- the device task on real pictures ------------------------------------------------------------
@needs_shared
def test_bus_scene_finds_the_bus_and_the_people(coco_bundle):
    bundle = Bundle.open(coco_bundle)
    entry = bundle.manifest.model("detector")
    assert bundle.manifest.task == "detection" and entry.source_format == "paddle-legacy"
    assert entry.selected_artifact().precision == "fp32" and len(entry.labels) == 80
    results, image = detect(coco_bundle, "coco_bus.jpg")
    check_well_formed(results, image, entry.postprocess["draw_threshold"])
    counts = Counter(r["label"] for r in results)
    assert counts["bus"] == 1 and 3 <= counts["person"] <= 5 and set(counts) == {"bus", "person"}
    bus = next(r["box"] for r in results if r["label"] == "bus")
    h, w = image.shape[:2]
    assert bus[2] - bus[0] > 0.8 * w               # the bus spans the picture
    for person in (r["box"] for r in results if r["label"] == "person"):
        assert person[3] - person[1] > 1.5 * (person[2] - person[0])     # standing people: tall boxes
        assert person[3] > bus[1] + 0.5 * (bus[3] - bus[1])              # feet below the bus's middle


@needs_shared
def test_kite_scene_finds_many_people_and_the_kite(coco_bundle):
    results, image = detect(coco_bundle, "det_000000014439.jpg")
    check_well_formed(results, image, 0.5)
    counts = Counter(r["label"] for r in results)
    assert 6 <= counts["person"] <= 10 and counts["kite"] >= 1


@needs_shared
def test_layout_page_blocks(layout_bundle):
    bundle = Bundle.open(layout_bundle)
    assert bundle.manifest.model("detector").source_format == "paddle-pir"
    results, image = detect(layout_bundle, "det_layout.jpg")
    check_well_formed(results, image, 0.5)
    counts = Counter(r["label"] for r in results)
    assert 5 <= counts["text"] <= 9 and 2 <= counts["title"] <= 4 and 1 <= counts["table"] <= 3
    assert set(counts) <= {"text", "title", "table", "figure"}
    # a two-column paper: text blocks sit in either half, none straddles the middle
    w = image.shape[1]
    centres = [(r["box"][0] + r["box"][2]) / 2 for r in results if r["label"] == "text"]
    assert any(c < w / 2 for c in centres) and any(c > w / 2 for c in centres)
    assert all(r["box"][2] - r["box"][0] < 0.55 * w for r in results if r["label"] == "text")


@needs_shared
def test_draw_threshold_in_the_manifest_sets_what_is_published(coco_bundle, tmp_path):
    copy = tmp_path / "strict"
    shutil.copytree(coco_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["postprocess"]["draw_threshold"] = 0.85
    (copy / "manifest.json").write_text(json.dumps(manifest))
    strict, _ = detect(copy, "coco_bus.jpg")
    default, _ = detect(coco_bundle, "coco_bus.jpg")
    assert strict == [r for r in default if r["score"] > 0.85] and 0 < len(strict) < len(default)


@needs_shared
def test_drawing_marks_the_boxes_and_leaves_the_picture_alone(coco_bundle):
    results, image = detect(coco_bundle, "coco_bus.jpg")
    before = image.copy()
    drawn = draw("detection", image, results)
    assert np.array_equal(image, before) and drawn.shape == image.shape
    changed = np.any(drawn != image, axis=2)
    x1, y1, x2, y2 = (int(v) for v in results[0]["box"])
    assert changed[y1:y2, x1].mean() > 0.9                # the left edge of the best box is drawn
    assert changed[y1 + 40:y2 - 40, x1 + 40:x2 - 40].mean() < 0.1   # inside: the picture (other boxes' lines)


def test_ocr_drawing_outlines_quadrilaterals_and_survives_non_ascii_text():
    image = np.full((200, 300, 3), 255, np.uint8)
    line = {"text": "韩国 PAIN", "score": 0.9, "box": [[50, 80], [250, 80], [250, 120], [50, 120]]}
    drawn = draw("ocr", image, [line])
    changed = np.any(drawn != image, axis=2)
    assert changed[100, 50] and changed[100, 250] and not changed[100, 150]


# ---- the converter-side family -------------------------------------------------------------------
@needs_shared
def test_family_feeds_are_real_views_and_the_fp32_model_agrees_with_itself(coco_bundle):
    spec = load_source(PICODET / "picodet_s_320_coco").spec
    family = DetectionFamily({"detector": spec}, threads=1)
    fp32 = {"detector": coco_bundle / "detector.fp32.onnx"}
    pictures = [IMAGES / name for name in COCO_PICTURES]
    calib = family.calibration_feeds("detector", fp32, pictures, limit=8)
    timing = family.latency_feeds("detector", fp32, pictures, limit=8)
    assert len(calib) == 8 and len(timing) == 2 * len(pictures)          # as is and the centred crop
    assert all(f["image"].shape == (1, 3, 320, 320) and f["image"].dtype == np.float32 for f in calib + timing)
    # no calibration tensor is an evaluation tensor
    assert not any(np.allclose(c["image"], t["image"]) for c in calib for t in timing)
    same = family.evaluate("detector", fp32, fp32["detector"], pictures)
    assert same.passed and same.value == 1.0 and same.samples >= 30   # (4 + 9 + 3 + 2 objects) x 2 views


@needs_shared
def test_family_catches_a_broken_int8_detector(coco_bundle, tmp_path):
    """Plain MinMax INT8 is known to wreck PicoDet (shared/notes/onnx-int8-baseline.md): the
    family's box F1 must say so, so that the converter keeps FP32."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from converters.calibration import FeedListReader

    spec = load_source(PICODET / "picodet_s_320_coco").spec
    family = DetectionFamily({"detector": spec}, threads=1)
    fp32 = {"detector": coco_bundle / "detector.fp32.onnx"}
    pictures = [IMAGES / name for name in COCO_PICTURES]
    prepared, int8 = tmp_path / "pre.onnx", tmp_path / "int8.onnx"
    quant_pre_process(str(fp32["detector"]), str(prepared), skip_symbolic_shape=True)
    calib = FeedListReader(family.calibration_feeds("detector", fp32, pictures, 12))
    quantize_static(str(prepared), str(int8), calib, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    verdict = family.evaluate("detector", fp32, int8, pictures)
    assert verdict.metric == "box_f1@0.5 vs fp32" and verdict.budget == 0.95
    assert 0.0 <= verdict.value < 0.95 and not verdict.passed and verdict.samples >= 15
    assert "misses budget" in verdict.describe()


def test_picture_mapping_survives_keep_ratio_resize_and_stride_padding():
    """PaddleDetection's keep-ratio Resize plus PadStride: the content's corners map back to the
    picture's corners, the padding maps outside it (and is clipped away)."""
    image = np.zeros((500, 1000, 3), np.uint8)
    pre = Preprocess([{"op": "resize_short_long", "short": 608, "long": 800, "interp": "linear"},
                      {"op": "normalize"}, {"op": "to_chw"}, {"op": "pad_stride", "stride": 32}])
    tensor, frame = pre(image)
    assert tensor.shape == (1, 3, 416, 800)              # 1000x500 -> 800x400 -> padded to 416 rows
    mapped = to_source(np.array([[0, 0, 800, 400], [0, 0, 800, 416]], np.float32), frame)
    assert mapped.tolist() == [pytest.approx([0, 0, 1000, 500])] * 2
