"""PaddleDetection infer_cfg.yml and PaddleClas/PaddleX inference.yml: what the real exports say,
checked against the toolkits' documented pre-processing recomputed here with plain OpenCV, and
errors that name the file, line and key."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from converters import metadata
from converters.metadata import paddleclas, paddledet, read_spec
from runtimes.errors import MetadataError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS, IMAGES = SHARED / "models", SHARED / "images"
COCO = MODELS / "PP-PicoDet" / "picodet_s_320_coco"
LAYOUT = MODELS / "PP-PicoDet" / "picodet_lcnet_layout_cdla"
POSE = MODELS / "PP-TinyPose" / "tinypose_128x96"
LCNET = MODELS / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason=f"needs the shared models folder {SHARED}")
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The readers as the lead registers them in READERS (a no-op once merged)."""
    missing = [reader for reader in (paddledet, paddleclas) if reader not in metadata.READERS]
    if missing:
        monkeypatch.setattr(metadata, "READERS", [*metadata.READERS, *missing])


def imagenet_chw(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]


def export_copy(tmp_path: Path, source: Path, name: str, edit=None) -> Path:
    folder = tmp_path / source.name
    folder.mkdir()
    meta = folder / name
    shutil.copy(source / name, meta)
    meta.chmod(0o644)
    if edit:
        meta.write_text(edit(meta.read_text()))
    return meta


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# ---- PaddleDetection -----------------------------------------------------------------------------
def test_picodet_coco_export_reads_as_an_80_class_raw_head_detector():
    spec = read_spec(COCO / "infer_cfg.yml")
    assert (spec.role, spec.task, spec.name) == ("detector", "detection", COCO.name)
    assert spec.input.name == "image" and spec.input.shape == [1, 3, 320, 320]
    assert len(spec.labels) == 80 and spec.labels[0] == "person" and "traffic light" in spec.labels
    post = spec.postprocess
    assert post["kind"] == "detection" and post["fpn_stride"] == [8, 16, 32, 64]
    assert (post["score_threshold"], post["nms_threshold"], post["nms_top_k"], post["keep_top_k"]) == (
        0.3, 0.5, 1000, 100)
    assert post["draw_threshold"] == 0.5


def test_picodet_chain_is_rgb_cubic_resize_and_imagenet_normalisation():
    image = read_image(IMAGES / "coco_bus.jpg")
    tensor, frame = Preprocess(read_spec(COCO / "infer_cfg.yml").preprocess)(image)
    rgb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (320, 320), interpolation=cv2.INTER_CUBIC)
    assert tensor.shape == (1, 3, 320, 320) and np.allclose(tensor, imagenet_chw(rgb), atol=1e-5)
    assert frame.scale_xy == pytest.approx((320 / image.shape[1], 320 / image.shape[0]))


def test_layout_export_pads_to_the_stride_and_its_pir_copy_reads_the_same():
    legacy, pir = read_spec(LAYOUT / "infer_cfg.yml"), read_spec(LAYOUT / "pir" / "infer_cfg.yml")
    assert legacy.preprocess[-1] == {"op": "pad_stride", "stride": 32}
    assert legacy.input.shape == [1, 3, 800, 608] and legacy.labels[:3] == ["text", "title", "figure"]
    assert (pir.name, pir.preprocess, pir.postprocess, pir.labels) == (
        legacy.name, legacy.preprocess, legacy.postprocess, legacy.labels)


def test_tinypose_export_reads_as_a_pose_model_with_paddledetections_affine():
    spec = read_spec(POSE / "infer_cfg.yml")
    assert (spec.role, spec.task, spec.name) == ("pose", "keypoints", POSE.name)
    assert spec.input.shape == [1, 3, 128, 96] and spec.postprocess["kind"] == "heatmaps"
    image = read_image(IMAGES / "det_hrnet_demo.jpg")
    tensor, frame = Preprocess(spec.preprocess)(image)
    # TopDownEvalAffine on the whole picture: centre (w/2, h/2) onto the input's centre, and the
    # point half a width above it onto the point half the input width above (PaddleDetection's
    # get_affine_transform with rotation 0), the third point at a right angle.
    h, w = image.shape[:2]
    src = np.float32([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [w / 2 - w / 2, h / 2 - w / 2]])
    dst = np.float32([[48, 64], [48, 64 - 48], [48 - 48, 64 - 48]])
    matrix = cv2.getAffineTransform(src, dst)
    warped = cv2.warpAffine(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), matrix, (96, 128), flags=cv2.INTER_LINEAR)
    # equal within one grey level (the two matrices differ in their last float bits)
    one_level = 1 / 255 / IMAGENET_STD.min()
    assert tensor.shape == (1, 3, 128, 96) and np.allclose(tensor, imagenet_chw(warped), atol=one_level + 1e-6)
    # the frame maps the input's centre back to the picture's centre
    (sx, sy), (ox, oy) = frame.scale_xy, frame.offset_xy
    assert ((48 + ox) / sx, (64 + oy) / sy) == pytest.approx((w / 2, h / 2))


def test_keep_ratio_resize_pairs_short_with_short_and_long_with_long(tmp_path):
    meta = export_copy(tmp_path, LAYOUT, "infer_cfg.yml",
                       lambda t: t.replace("keep_ratio: false", "keep_ratio: true"))
    spec = read_spec(meta)
    assert spec.preprocess[1] == {"op": "resize_short_long", "short": 608, "long": 800, "interp": "cubic"}
    assert spec.input.shape == [1, 3, None, None]
    image = read_image(IMAGES / "det_layout.jpg")                  # 760 wide, 865 high
    tensor, _ = Preprocess(spec.preprocess)(image)
    # 608 / 760 = 0.8 for the short side; the long side then is 692 <= 800, so 0.8 stands
    assert tensor.shape == (1, 3, 704, 608)                          # 692 rows padded to stride 32


@pytest.mark.parametrize("edit, fragment, where", [
    (lambda t: t.replace("- type: Permute", "- type: Permute\n- type: RandomFlip"), "'RandomFlip' is not supported",
     "type: RandomFlip"),
    (lambda t: t.replace("arch: PicoDet", "arch: YOLO"), "arch 'YOLO' is not supported", "arch: YOLO"),
    (lambda t: t.replace("interp: 2", "interp: 9"), "unknown OpenCV interpolation code 9", "interp: 9"),
    (lambda t: t.split("fpn_stride:")[0], "needs fpn_stride", None),
    (lambda t: t.replace("- type: Permute\n", ""), "no Permute", None),
])
def test_paddledetection_errors_name_the_file_line_and_key(tmp_path, edit, fragment, where):
    meta = export_copy(tmp_path, COCO, "infer_cfg.yml", edit)
    with pytest.raises(MetadataError, match=fragment) as caught:
        read_spec(meta)
    assert str(caught.value).startswith(str(meta))
    if where:
        assert caught.value.line == line_of(meta, where)


# ---- PaddleClas / PaddleX ------------------------------------------------------------------------
def test_lcnet_export_reads_as_a_four_way_orientation_classifier():
    spec = read_spec(LCNET / "inference.yml")
    assert (spec.role, spec.task, spec.name) == ("classifier", "classification", "PP-LCNet_x1_0_doc_ori")
    assert spec.labels == ["0", "90", "180", "270"] and spec.postprocess == {"kind": "topk", "topk": 1}
    assert spec.input.name == "x" and spec.input.shape == [None, 3, 224, 224]


def test_lcnet_chain_is_rgb_short_side_256_centre_crop_224_and_imagenet_normalisation():
    image = read_image(IMAGES / "cls_img_rot180_demo.jpg")           # 512 x 384
    tensor, _ = Preprocess(read_spec(LCNET / "inference.yml").preprocess)(image)
    rgb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (341, 256), interpolation=cv2.INTER_LINEAR)
    crop = rgb[16:240, 58:282]
    assert tensor.shape == (1, 3, 224, 224) and np.allclose(tensor, imagenet_chw(crop), atol=1e-5)


def test_pp_ocr_metadata_is_left_to_its_own_reader():
    for model in ("ch_PP-OCRv4_det", "ch_PP-OCRv4_rec", "ch_ppocr_mobile_v2_cls"):
        spec = read_spec(MODELS / "PP-OCR" / model / "inference.yml")
        assert spec.task == "ocr", model


def test_decode_image_without_rgb_keeps_bgr(tmp_path):
    decode_bgr = "  - DecodeImage:\n      to_rgb: false\n  - ResizeImage:"
    meta = export_copy(tmp_path, LCNET, "inference.yml", lambda t: t.replace("  - ResizeImage:", decode_bgr))
    assert read_spec(meta).preprocess[0] == {"op": "color", "order": "bgr"}


def test_older_export_with_a_class_id_map_file(tmp_path):
    folder = tmp_path / "old_export"
    folder.mkdir()
    text = (LCNET / "inference.yml").read_text().split("PostProcess:")[0]
    (folder / "inference.yml").write_text(text + "PostProcess:\n  name: Topk\n  topk: 2\n"
                                          "  class_id_map_file: ppcls/utils/orientation_label_list.txt\n")
    (folder / "orientation_label_list.txt").write_text("0 0\n1 90\n2 180\n3 270\n")
    spec = read_spec(folder / "inference.yml")
    assert spec.labels == ["0", "90", "180", "270"] and spec.postprocess["topk"] == 2


@pytest.mark.parametrize("edit, fragment, where", [
    (lambda t: t.replace("order: ''", "order: chw"), "only HWC NormalizeImage", "order: chw"),
    (lambda t: t.replace("  - ToCHWImage: null\n", ""), "must end with ToCHWImage", None),
    (lambda t: t.replace("resize_short: 256", "resize_short: 256\n      backend: pil"), "only the cv2 backend",
     "backend: pil"),
    (lambda t: t.replace("  - CropImage:", "  - RandCropImage:"), "'RandCropImage' is not supported",
     "RandCropImage"),
])
def test_paddleclas_errors_name_the_file_line_and_key(tmp_path, edit, fragment, where):
    meta = export_copy(tmp_path, LCNET, "inference.yml", edit)
    with pytest.raises(MetadataError, match=fragment) as caught:
        read_spec(meta)
    assert str(caught.value).startswith(str(meta))
    if where:
        assert caught.value.line == line_of(meta, where)
