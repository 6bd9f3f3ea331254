"""Small pictures with small print: the det small-input resize policy, where it lives, and what it buys.

The bundle is the session's real PP-OCRv4 conversion (`ocr_bundle_dir`, tests/conftest.py); the small pictures
and line recall are bench/ocr_small_print.py's own (its docstring defines them), so test and bench measure alike.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.ocr_small_print import (agreed_lines, demo_sheets, line_recall, our_reader, peer_reader, shrink,
                                   substring_edits)
from converters.families.ocr import SMALL_INPUT_POLICY
from edge.daemon.config import load_daemon_config
from runtimes.bundle import Bundle
from runtimes.errors import BundleError, ConfigError
from runtimes.tasks import load_task
from runtimes.tasks.preprocess import Frame, Preprocess, resize_limit

OFF = {"det": {"resize_limit": {"min_side_len": 0}}}


@pytest.fixture(scope="module")
def bundle(ocr_bundle_dir: Path) -> Bundle:
    return Bundle.open(ocr_bundle_dir)


def det_op(bundle: Bundle) -> dict:
    return next(op for op in bundle.manifest.model("det").preprocess if op["op"] == "resize_limit")


def det_input_hw(bundle: Bundle, hw: tuple[int, int]) -> tuple[int, int]:
    """The size the bundle's det model sees for a picture of `hw`, through its manifest pre-processing."""
    tensor, _ = Preprocess(bundle.manifest.model("det").preprocess)(np.zeros((*hw, 3), np.uint8))
    return tensor.shape[2], tensor.shape[3]


# --- the resize itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, policy, expected", [
    ((240, 320), {}, (256, 320)),                                    # export's resize: never enlarged
    ((240, 320), {"min_side_len": 768}, (704, 960)),                 # long side reaches 960 first
    ((240, 240), {"min_side_len": 768}, (768, 768)),                 # short side reaches 768 first
    ((100, 2000), {"min_side_len": 768}, (64, 960)),                 # a long strip: only the max limit
    ((720, 1280), {"min_side_len": 768}, (544, 960)),                # a large frame: as without the policy
    ((480, 640), {"min_side_len": 768, "small_side_len": 500}, (704, 960)),
    ((542, 722), {"min_side_len": 768, "small_side_len": 500}, (544, 736)),   # not small: as without it
    ((240, 320), {"min_side_len": 768, "max_side_limit": 640}, (480, 640)),
    ((240, 320), {"limit_side_len": 64, "limit_type": "min", "min_side_len": 768}, (768, 1024)),
])
def test_resize_limit_enlarges_small_pictures_within_the_long_side_cap(hw, policy, expected) -> None:
    frame = resize_limit(Frame(np.zeros((*hw, 3), np.uint8), hw), **policy)
    assert frame.image.shape[:2] == expected
    assert frame.scale_xy == pytest.approx((expected[1] / hw[1], expected[0] / hw[0]))


def test_preprocess_parameters_are_checked_when_loaded() -> None:
    with pytest.raises(BundleError, match="no parameter 'min_side'"):
        Preprocess([{"op": "resize_limit", "min_side": 768}])
    with pytest.raises(BundleError, match="min_side_len = 'big'"):
        Preprocess([{"op": "resize_limit", "min_side_len": "big"}])


def test_substring_edits_finds_a_line_inside_a_longer_reading() -> None:
    assert substring_edits("Total", "Invoice Total: 42") == 0
    assert substring_edits("Totel", "Invoice Total: 42") == 1
    assert line_recall(["Hello", "World"], ["Hel", "lo there"]) == 0.5     # a line split in two still counts


# --- where the policy lives ----------------------------------------------------------------------------

def test_the_converter_writes_the_policy_into_the_manifest(bundle: Bundle) -> None:
    det = bundle.manifest.model("det")
    assert det_op(bundle) == {"op": "resize_limit", "limit_side_len": 960, "limit_type": "max",
                              **SMALL_INPUT_POLICY[det.name]}
    assert det_input_hw(bundle, (240, 320)) == (704, 960)


def test_the_task_reads_the_policy_from_the_manifest(ocr_bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(ocr_bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    op = next(op for m in manifest["models"] if m["role"] == "det" for op in m["preprocess"]
              if op["op"] == "resize_limit")
    op["min_side_len"] = 512
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    task = load_task(Bundle.open(copy))
    tensor, _ = task.det.preprocess(np.zeros((240, 320, 3), np.uint8))
    assert tensor.shape[2:] == (512, 672)


def test_daemon_config_overrides_the_policy_per_pipeline(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = tmp_path / "edge.yaml"
    text = (f"device_id: cam\nbroker: {{url: 'mqtt://127.0.0.1'}}\nstate_dir: state\npipelines:\n"
            f"  - bundle: {bundle.root}\n    source: in\n    preprocess: {{det: {{resize_limit: {{min_side_len: 0}}}}}}\n")
    config.write_text(text, encoding="utf-8")
    pipeline = load_daemon_config(config).pipelines[0]
    assert pipeline.preprocess == OFF
    overridden = bundle.with_preprocess(pipeline.preprocess)
    assert det_input_hw(overridden, (240, 320)) == (256, 320)
    assert det_input_hw(bundle, (240, 320)) == (704, 960)          # the bundle itself is unchanged

    for wrong, message in (("{det: {resize_limit: {min_side: 0}}}", "no parameter 'min_side'"),
                           ("{det: {resize_limit: {min_side_len: many}}}", "min_side_len = 'many'"),
                           ("{det: {resize_short: {size: 9}}}", "no pre-processing op 'resize_short'"),
                           ("{pose: {resize_limit: {min_side_len: 0}}}", "no 'pose' model")):
        config.write_text(text.replace("{det: {resize_limit: {min_side_len: 0}}}", wrong), encoding="utf-8")
        with pytest.raises(ConfigError, match=message) as err:
            load_daemon_config(config)
        assert "\n" not in str(err.value)


# --- what it buys: line recall on small pictures vs the peer at its defaults ---------------------------

@pytest.fixture(scope="module")
def peer():
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr_onnxruntime is not installed")
    return peer_reader(1)


def small_set(peer, bundle: Bundle, shared_dir: Path) -> list[tuple[str, np.ndarray, list[str]]]:
    """Demo note at 240 and 320 px (rendered text as reference), a shop sign at 320 and a page at 400 px
    (reference: the lines the peer and our export-resize pipeline both read on the original)."""
    note = next((image, lines) for name, image, lines in demo_sheets() if name == "demo_note")
    export = our_reader(load_task(bundle.with_preprocess(OFF)))
    pictures = [(f"demo_note@{side}", shrink(note[0], side), note[1]) for side in (240, 320)]
    for name, side in (("ocr_en_img623.jpg", 320), ("ocr_11.jpg", 240)):
        image = cv2.imread(str(shared_dir / "images" / name))
        pictures.append((f"{name}@{side}", shrink(image, side), agreed_lines(image, [peer, export])))
    return pictures


def test_small_print_recall_is_at_least_the_peers(peer, bundle: Bundle, shared_dir: Path) -> None:
    """On the bundle's FP32 artifacts, as the peer runs FP32 models: this judges the resize policy. (The INT8
    recognizer the x86-vnni bundle selects reads tiny crops worse, with or without the policy; see the report
    of issue 14, section 2.)"""
    bundle = bundle.with_precision("fp32")
    ours, export = our_reader(load_task(bundle)), our_reader(load_task(bundle.with_preprocess(OFF)))
    rows = []
    for name, image, reference in small_set(peer, bundle, shared_dir):
        assert reference, name
        rows.append((name, *(line_recall(reference, read(image)) for read in (ours, peer, export))))
    table = "\n".join(f"{name}: ours {a:.3f} peer {b:.3f} export resize {c:.3f}" for name, a, b, c in rows)
    assert all(a >= b for _, a, b, _ in rows), table
    # the policy is what makes the difference: without it these pictures lose lines
    assert sum(c for *_, c in rows) < sum(a for _, a, *_ in rows), table
