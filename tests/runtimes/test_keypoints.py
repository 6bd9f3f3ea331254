"""PP-TinyPose top-down keypoints with a PP-PicoDet person detector, end to end, plus the geometry.

The bundle is made by `edge convert` (in-process) from the two Paddle exports, with a profile that
asks only for ONNX FP32.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import write_fp32_profile

from converters.families.keypoints import KeypointsFamily
from runtimes.bundle import Bundle
from runtimes.errors import BundleError
from runtimes.image import read_image
from runtimes.tasks import heatmap, load_task
from runtimes.tasks.keypoints import COCO_KEYPOINTS

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
POSE = SHARED / "models" / "PP-TinyPose" / "tinypose_128x96"
DETECTOR = SHARED / "models" / "PP-PicoDet" / "picodet_s_320_coco"
IMAGES = SHARED / "images"
DEMO = IMAGES / "det_hrnet_demo.jpg"
PEOPLE = [DEMO, IMAGES / "coco_zidane.jpg", IMAGES / "coco_bus.jpg"]
needs_shared = pytest.mark.skipif(not POSE.is_dir(), reason=f"needs the shared models folder {SHARED}")



@pytest.fixture(scope="module")
def pose_bundle(tmp_path_factory) -> Path:
    if not POSE.is_dir():
        pytest.skip(f"needs the shared models folder {SHARED}")
    from edge.cli import main

    work = tmp_path_factory.mktemp("tinypose")
    profile = write_fp32_profile(work)
    val = work / "val"
    val.mkdir()
    for image in PEOPLE:
        shutil.copy(image, val / image.name)
    out = work / "bundle"
    code = main(["convert", str(DETECTOR), str(POSE), "--profile", str(profile), "--val", str(val),
                 "-o", str(out), "--quiet"])
    assert code == 0, "edge convert failed (its one-line error is above)"
    return out


def _mean_y(person: dict, *names: str) -> float:
    points = {kp["name"]: kp for kp in person["keypoints"]}
    return float(np.mean([points[n]["y"] for n in names]))


@needs_shared
def test_demo_person_gets_17_coco_keypoints_in_body_order(pose_bundle):
    bundle = Bundle.open(pose_bundle)
    assert bundle.manifest.task == "keypoints"
    assert [m.role for m in bundle.manifest.models] == ["detector", "pose"]
    image = read_image(DEMO)
    results = load_task(bundle)(image).results
    assert results and all(r["label"] == "person" for r in results)
    person = results[0]
    assert [kp["name"] for kp in person["keypoints"]] == COCO_KEYPOINTS
    head = _mean_y(person, "nose", "left_eye", "right_eye")
    shoulders = _mean_y(person, "left_shoulder", "right_shoulder")
    hips = _mean_y(person, "left_hip", "right_hip")
    knees = _mean_y(person, "left_knee", "right_knee")
    ankles = _mean_y(person, "left_ankle", "right_ankle")
    assert head < shoulders < hips < knees < ankles
    x1, y1, x2, y2 = person["box"]
    margin = 0.15 * max(x2 - x1, y2 - y1)
    for kp in person["keypoints"]:
        assert x1 - margin <= kp["x"] <= x2 + margin and y1 - margin <= kp["y"] <= y2 + margin
        assert 0.0 <= kp["score"] <= 1.5
    assert np.mean([kp["score"] for kp in person["keypoints"]]) > 0.5
    assert json.loads(json.dumps(results)) == results


@needs_shared
def test_heatmap_peaks_agree_with_the_fixtures_measurement(pose_bundle):
    # MANIFEST: the pose model on this picture peaks at rows nose 6, shoulders 8, hips 15, ankles 26 of 32
    task = load_task(Bundle.open(pose_bundle))
    image = read_image(DEMO)
    persons = task.persons(image)
    crops, _, _ = task.pose_input.crops(image, [persons[0]["box"]])
    maps = task.heatmaps(crops)
    assert maps.shape == (1, 17, 32, 24)
    rows, _ = heatmap.peaks(maps)
    rows = rows[0, :, 1]
    expected = {"nose": 6, "left_shoulder": 8, "right_shoulder": 8, "left_hip": 15, "right_hip": 15,
                "left_ankle": 26, "right_ankle": 26}
    for name, row in expected.items():
        assert abs(rows[COCO_KEYPOINTS.index(name)] - row) <= 2, (name, rows[COCO_KEYPOINTS.index(name)])


@needs_shared
def test_every_detected_person_is_posed(pose_bundle):
    task = load_task(Bundle.open(pose_bundle))
    image = read_image(IMAGES / "coco_bus.jpg")
    persons = task.persons(image)
    results = task(image).results
    assert len(persons) >= 2 and len(results) == len(persons)
    assert [r["box"] for r in results] == [p["box"] for p in persons]
    for person in results:
        assert len(person["keypoints"]) == 17
        assert _mean_y(person, "left_shoulder", "right_shoulder") < _mean_y(person, "left_ankle", "right_ankle")


@needs_shared
def test_a_free_batch_in_the_manifest_over_a_fixed_batch_artifact_still_poses_everyone(pose_bundle,
                                                                                        tmp_path):
    copy = tmp_path / "freebatch"
    shutil.copytree(pose_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][1]["input"]["shape"][0] = None       # the artifact itself takes one person
    manifest["models"][1]["postprocess"]["batch_size"] = 3   # a failing first batch, then one by one
    (copy / "manifest.json").write_text(json.dumps(manifest))
    image = read_image(IMAGES / "det_000000014439.jpg")       # a crowd: several batches' worth
    task = load_task(Bundle.open(copy))
    assert task.batch_size == 3
    results = task(image).results
    assert len(results) > 4 and results == load_task(Bundle.open(pose_bundle))(image).results
    assert task.batch_size == 1


@needs_shared
def test_person_threshold_comes_from_the_manifest(pose_bundle, tmp_path):
    copy = tmp_path / "strict"
    shutil.copytree(pose_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["postprocess"]["draw_threshold"] = 0.999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_task(Bundle.open(copy))(read_image(DEMO)).results == []


@needs_shared
def test_a_pose_model_without_heatmap_postprocess_is_refused(pose_bundle, tmp_path):
    copy = tmp_path / "wrong"
    shutil.copytree(pose_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][1]["postprocess"]["kind"] = "detection"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        load_task(Bundle.open(copy))
    assert "heatmaps" in str(err.value) and "pose" in str(err.value)


@needs_shared
def test_family_pck_of_the_trained_onnx_original_and_separate_calibration(pose_bundle):
    from converters.sources import load_source

    specs = {"detector": load_source(DETECTOR).spec, "pose": load_source(POSE).spec}
    family = KeypointsFamily(specs, threads=1)
    fp32 = {"detector": pose_bundle / "detector.fp32.onnx", "pose": pose_bundle / "pose.fp32.onnx"}
    same = family.evaluate("pose", fp32, fp32["pose"], PEOPLE)
    assert same.value == 1.0 and same.passed and same.samples >= 17
    # the ONNX the Paddle files were converted from (opset 18, fp16-rounded weights): same joints
    original = family.evaluate("pose", fp32, POSE / "model.onnx", PEOPLE)
    assert original.passed, original.describe()
    calib = family.calibration_feeds("pose", fp32, PEOPLE, limit=6)
    evals = family.latency_feeds("pose", fp32, PEOPLE, limit=50)
    assert calib and all(f["image"].shape == (1, 3, 128, 96) for f in calib + evals)
    assert not any(np.array_equal(c["image"], e["image"]) for c in calib for e in evals)
    detector = family.evaluate("detector", fp32, fp32["detector"], PEOPLE)
    assert detector.passed and detector.samples > 0


@needs_shared
def test_drawing_the_pose(pose_bundle):
    from edge.drawing import pose

    image = read_image(DEMO)
    results = load_task(Bundle.open(pose_bundle))(image).results
    before = image.copy()
    drawn = pose.draw(image, results)
    assert np.array_equal(image, before) and drawn.shape == image.shape
    nose = next(kp for kp in results[0]["keypoints"] if kp["name"] == "nose")
    x, y = int(round(nose["x"])), int(round(nose["y"]))
    assert not np.array_equal(drawn[y, x], image[y, x])


# ---- geometry, with known answers worked out by hand -------------------------------------------

def test_grow_box_reaches_the_model_aspect_then_pads():
    centre, size = heatmap.grow_box([10, 20, 110, 420], aspect=96 / 128)   # 100 x 400: too tall
    assert centre.tolist() == [60, 220]
    assert size.tolist() == pytest.approx([400 * 0.75 * 1.25, 400 * 1.25])
    _, wide = heatmap.grow_box([0, 0, 300, 100], aspect=0.75, padding=1.0)
    assert wide.tolist() == pytest.approx([300, 400])


def test_box_to_grid_and_back_are_inverse_and_centre_the_box():
    centre, size = np.array([60.0, 220.0]), np.array([375.0, 500.0])
    matrix = heatmap.box_to_grid(centre, size, 96, 128)
    assert matrix @ [60, 220, 1] == pytest.approx([48, 64])
    points = np.array([[0.0, 0.0], [23.5, 31.5], [12, 16]])
    on_map = heatmap.box_to_grid(centre, size, 24, 32)
    back = heatmap.grid_to_image(points, centre, size, 24, 32)
    assert (np.c_[back, np.ones(3)] @ on_map.T) == pytest.approx(points)
    assert back[2].tolist() == pytest.approx(centre.tolist())


def test_warp_person_shows_the_box_centre_at_the_crop_centre():
    image = np.zeros((400, 300, 3), np.uint8)
    cv2.circle(image, (150, 180), 6, (255, 255, 255), -1)
    centre, size = heatmap.grow_box([100, 100, 200, 260], aspect=0.75)
    crop = heatmap.warp_person(image, centre, size, 96, 128)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert crop.shape == (128, 96, 3)
    assert xs.mean() == pytest.approx(48 - 0.5, abs=1) and ys.mean() == pytest.approx(64 - 0.5, abs=1)


def _gaussian_map(x0: float, y0: float, sigma: float = 2.0, shape=(32, 24)) -> np.ndarray:
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma ** 2))


def test_dark_recovers_a_sub_pixel_peak_that_argmax_rounds_away():
    maps = np.stack([_gaussian_map(10.3, 12.7), _gaussian_map(5.8, 20.2)])[None].astype(np.float32)
    coords, scores = heatmap.peaks(maps)
    assert coords[0].tolist() == [[10, 13], [6, 20]] and scores[0] == pytest.approx([1, 1], abs=0.1)
    refined = heatmap.dark_refine(maps, coords)
    truth = np.array([[10.3, 12.7], [5.8, 20.2]])
    assert refined[0] == pytest.approx(truth, abs=0.1)
    assert np.abs(refined[0] - truth).max() < np.abs(coords[0] - truth).max()


def test_peaks_at_the_border_and_empty_maps_keep_their_integer_place():
    maps = np.stack([_gaussian_map(0.4, 1.0), np.zeros((32, 24))])[None].astype(np.float32)
    coords, scores = heatmap.peaks(maps)
    refined = heatmap.dark_refine(maps, coords)
    assert refined[0, 0].tolist() == coords[0, 0].tolist() == [0, 1]
    assert refined[0, 1].tolist() == [0, 0] and scores[0, 1] == 0
    points, point_scores = heatmap.decode(np.zeros((0, 17, 32, 24), np.float32), np.zeros((0, 2)), np.zeros((0, 2)))
    assert points.shape == (0, 17, 2) and point_scores.shape == (0, 17)
