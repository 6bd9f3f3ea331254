"""The four non-OCR families on x86-vnni, the whole way: the official Paddle export -> `edge convert --calib`
(INT8 only where it meets the family's budget and is faster, else FP32 with the reason) -> bundle ->
`edge run` daemon -> the MQTT result message, checked for what is in the picture.

Each family's bundle is made once per session, calibrated on the shared pictures that fit the family (people
for pose, portraits for HumanSeg, text signs for the orientation classifier, COCO street scenes for PicoDet).
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jsonschema
import numpy as np
import pytest

from edge.daemon import contract
from runtimes.bundle import Bundle
from runtimes.image import read_image
from runtimes.tasks import rle
from runtimes.tasks.keypoints import COCO_KEYPOINTS

from .conftest import REPO_ROOT, convert_bundle

DEVICE = "cam-e2e"


@dataclass(frozen=True)
class FamilyCase:
    sources: tuple[str, ...]        # under shared/models
    calibration: tuple[str, ...]    # under shared/images
    picture: str                    # what the daemon is shown
    item: str                       # the result.schema.json $defs entry of one result


PICODET_COCO = "PP-PicoDet/picodet_s_320_coco"
LAYOUT_PAGES = ("det_layout.jpg", "ocr_1.jpg", "ocr_11.jpg", "ocr_en_img623.jpg")
CASES = {
    "detection": FamilyCase((PICODET_COCO,),
                            ("coco_bus.jpg", "coco_dog.jpg", "coco_zidane.jpg", "det_000000014439.jpg"),
                            "coco_bus.jpg", "detection"),
    "layout": FamilyCase(("PP-PicoDet/picodet_lcnet_layout_cdla",), LAYOUT_PAGES, "det_layout.jpg", "detection"),
    "classification": FamilyCase(("PP-LCNet/PPLCNet_x1_0_text_image_orientation",),
                                 ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg"),
                                 "cls_img_rot180_demo.jpg", "classification"),
    "keypoints": FamilyCase((PICODET_COCO, "PP-TinyPose/tinypose_128x96"),
                            ("coco_zidane.jpg", "det_hrnet_demo.jpg", "lite_human.jpg"),
                            "det_hrnet_demo.jpg", "keypoints"),
    "segmentation": FamilyCase(("PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224",),
                               ("seg_humanseg_demo.jpg", "seg_web_human.png", "lite_human.jpg"),
                               "seg_humanseg_demo.jpg", "segmentation"),
}
# The bars for an INT8 artifact against its FP32 twin, by the family metric's name prefix.
BARS = {"box_f1": 0.95, "top1_agreement": 1.0, "pck": 0.95, "mask_iou": 0.97}


@pytest.fixture(scope="session")
def family_bundle(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family_bundle("detection") -> the x86-vnni bundle of that family, converted on first use."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            case = CASES[family]
            calib = tmp_path_factory.mktemp(f"calib_{family}")
            for name in case.calibration:
                shutil.copyfile(shared_dir / "images" / name, calib / name)
            sources = [shared_dir / "models" / s for s in case.sources]
            made[family] = convert_bundle(tmp_path_factory.mktemp("bundles") / family, sources, "x86-vnni", calib)
        return made[family]

    return get


def budget_metric(metrics: dict[str, float]) -> tuple[str, float]:
    """(metric name, value) of the family metric among an INT8 artifact's measurements: the one with a bar."""
    found = [(re.match(r"[a-z0-9_]+", k).group(), v) for k, v in metrics.items()]
    found = [(name, v) for name, v in found if name in BARS]
    assert len(found) == 1, metrics
    return found[0]


@pytest.mark.parametrize("family", list(CASES))
def test_manifest_records_measurements_and_ships_int8_only_within_the_bar(family, family_bundle):
    manifest = Bundle.open(family_bundle(family)).manifest
    assert manifest.task == CASES[family].item and manifest.provenance.profile == "x86-vnni"   # item = task name
    for entry in manifest.models:
        assert entry.artifacts and entry.decision, entry.role
        for artifact in entry.artifacts:
            assert artifact.metrics, (entry.role, artifact.path)
            assert all(np.isfinite(v) for v in artifact.metrics.values()), artifact.metrics
            if artifact.precision == "int8":
                name, value = budget_metric(artifact.metrics)
                assert value >= BARS[name], (entry.role, name, value)
                assert artifact.metrics["latency_ratio"] < 1.0, (entry.role, artifact.metrics)
        fp32 = next(a for a in entry.artifacts if a.precision == "fp32")
        assert fp32.metrics["paddle_max_abs_diff"] < 1e-3, (entry.role, fp32.metrics)   # ONNX == Paddle
        chosen = entry.selected_artifact()
        assert entry.decision.startswith(f"runs onnx {chosen.precision}"), entry.decision
        if chosen.precision == "fp32":
            # the INT8 not shipped is named, with its number: refused (metric or speed), or within budget but
            # not the fastest in the side-by-side timing (converters/selection.py)
            assert re.search(r"onnx int8[^;]*: [^;]*\d\.\d", entry.decision), entry.decision


def run_daemon(bundle: Path, picture: Path, tmp_path: Path, broker, subscriber, edge_daemon) -> dict:
    """`edge run BUNDLE --source DIR --mqtt URL --device-id ID` on a folder holding `picture`: its one
    result message, validated against the result schema, item by item against the task's own shape."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(picture, folder / picture.name)
    pipeline = json.loads((bundle / "manifest.json").read_text())["pipeline"]
    topic = contract.results_topic(DEVICE, pipeline)
    sub = subscriber(broker, [topic])
    daemon = edge_daemon([str(bundle), "--source", str(folder), "--mqtt", broker.url, "--device-id", DEVICE,
                          "--poll-interval", "0.2", "--state-dir", str(tmp_path / "state")])
    message = sub.wait_for(topic, 1, timeout=60)[0].json()
    assert daemon.terminate() == 0, daemon.log
    assert "Traceback" not in daemon.log
    schema = json.loads((REPO_ROOT / contract.SCHEMA_FILES[contract.RESULT_SCHEMA]).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(message)
    item = jsonschema.Draft202012Validator({**schema["$defs"][CASES[
        Bundle.open(bundle).manifest.task].item], "$defs": schema["$defs"]})
    for result in message["results"]:
        item.validate(result)
    assert (message["device"], message["pipeline"], Path(message["source"]).name) == (DEVICE, pipeline,
                                                                                     picture.name)
    return message


@pytest.fixture
def daemon_result(family_bundle, shared_dir, tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon):
    """daemon_result(family) -> (the MQTT result message for the family's picture, the picture)."""
    def run(family: str) -> tuple[dict, np.ndarray]:
        picture = shared_dir / "images" / CASES[family].picture
        message = run_daemon(family_bundle(family), picture, tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon)
        return message, read_image(picture)
    return run


def test_daemon_publishes_the_bus_and_the_people(daemon_result):
    message, image = daemon_result("detection")
    counts = Counter(r["label"] for r in message["results"])
    assert counts["bus"] == 1 and 3 <= counts["person"] <= 5, counts
    h, w = image.shape[:2]
    bus = next(r["box"] for r in message["results"] if r["label"] == "bus")
    assert bus[2] - bus[0] > 0.8 * w                          # the bus spans the picture
    for x1, y1, x2, y2 in (r["box"] for r in message["results"] if r["label"] == "person"):
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert y2 - y1 > 1.5 * (x2 - x1)                      # standing people: tall boxes
        assert y2 > bus[1] + 0.5 * (bus[3] - bus[1])          # feet below the bus's middle


def test_int8_is_judged_on_pictures_it_was_not_calibrated_on(family_bundle):
    """PicoDet layout (4 pages): calibrated on two, judged on the other two; the manifest names both sets, and
    INT8 ships only within the bar there (plain INT8 judged on its own calibration pages looked better than
    it was: 0.98 vs 0.86 on other pages). Channel groups are tested in tests/converters/test_channel_groups.py."""
    manifest = Bundle.open(family_bundle("layout")).manifest
    pictures = manifest.metrics["pictures"]
    assert pictures["calibration"] == ["det_layout.jpg", "ocr_11.jpg"], pictures
    assert pictures["validation"] == ["ocr_1.jpg", "ocr_en_img623.jpg"], pictures
    entry = manifest.model("detector")
    for artifact in entry.artifacts:
        for check in artifact.checks:
            assert check.validation_pictures == pictures["validation"], (artifact.path, check)
            assert not set(check.calibration_pictures) & set(check.validation_pictures)
    chosen = entry.selected_artifact()
    if chosen.precision == "int8":
        judged = chosen.checks[0]
        assert judged.passed and judged.value >= BARS["box_f1"] and judged.details["samples"] > 0, judged
        assert chosen.metrics["latency_ratio"] < 1.0
    else:
        assert re.search(r"onnx int8[^;]*: refused: [^;]*\d\.\d", entry.decision), entry.decision


def test_daemon_publishes_the_regions_of_a_document_page(daemon_result):
    message, image = daemon_result("layout")
    counts = Counter(r["label"] for r in message["results"])
    assert counts["text"] >= 5 and counts["title"] >= 1 and counts["table"] >= 1, counts
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in (r["box"] for r in message["results"]):
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def mean_y(person: dict, *names: str) -> float:
    return float(np.mean([kp["y"] for kp in person["keypoints"] if kp["name"] in names]))


def test_daemon_publishes_17_keypoints_on_the_goalkeeper_head_to_ankles(daemon_result):
    message, image = daemon_result("keypoints")
    people = message["results"]
    assert people and {p["label"] for p in people} == {"person"}
    keeper = max(people, key=lambda p: p["score"])
    assert [kp["name"] for kp in keeper["keypoints"]] == COCO_KEYPOINTS
    x1, y1, x2, y2 = keeper["box"]
    assert y2 - y1 > 0.6 * image.shape[0]                     # one full-body person fills the picture
    order = [mean_y(keeper, "nose", "left_eye", "right_eye"), mean_y(keeper, "left_shoulder", "right_shoulder"),
             mean_y(keeper, "left_hip", "right_hip"), mean_y(keeper, "left_knee", "right_knee"),
             mean_y(keeper, "left_ankle", "right_ankle")]
    assert order == sorted(order), order                      # head, shoulders, hips, knees, ankles
    margin = 0.15 * max(x2 - x1, y2 - y1)
    for kp in keeper["keypoints"]:
        assert x1 - margin <= kp["x"] <= x2 + margin and y1 - margin <= kp["y"] <= y2 + margin, kp
    assert np.mean([kp["score"] for kp in keeper["keypoints"]]) > 0.5


def test_daemon_publishes_a_person_mask_covering_the_portrait(daemon_result):
    message, image = daemon_result("segmentation")
    assert [r["label"] for r in message["results"]] == ["person"]
    person = message["results"][0]
    assert 0.2 < person["area_ratio"] < 0.3                   # the woman takes about a quarter of the frame
    assert person["mask"]["size"] == list(image.shape[:2])
    mask = rle.decode(person["mask"])
    assert person["area_ratio"] == pytest.approx(mask.mean(), abs=1e-3)
    width = image.shape[1]
    centre = mask[:, int(width * 0.45):int(width * 0.55)].mean()
    borders = np.concatenate([mask[:, :width // 10], mask[:, -(width // 10):]], axis=1).mean()
    assert centre > 0.4 and borders < 0.15, (centre, borders)
    ys, xs = np.nonzero(mask)
    assert person["box"] == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=1)


def test_daemon_publishes_orientation_180_for_the_upside_down_sign(daemon_result):
    message, _ = daemon_result("classification")
    best = message["results"][0]
    assert best["label"] == "180" and best["score"] > 0.5, message["results"]
