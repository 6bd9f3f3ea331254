"""Reading exports: the right role and parameters from real metadata, clear errors for broken ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters.sources import load_source
from converters.worker_call import call_paddle_worker
from runtimes.errors import ConversionError, MetadataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
OCR = SHARED / "models" / "PP-OCR"
pytestmark = pytest.mark.skipif(not OCR.is_dir(), reason=f"needs the shared models folder {SHARED}")


def copy_export(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(OCR / name, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_ocr_roles_and_parameters_come_from_inference_yml():
    det, cls, rec = (load_source(OCR / n) for n in ("ch_PP-OCRv4_det", "ch_ppocr_mobile_v2_cls", "ch_PP-OCRv4_rec"))
    assert (det.spec.role, cls.spec.role, rec.spec.role) == ("det", "cls", "rec")
    assert det.format == "paddle-legacy" and det.params_file.name == "inference.pdiparams"
    assert det.spec.postprocess == {"kind": "db", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                                    "unclip_ratio": 1.5}
    assert det.spec.preprocess[0] == {"op": "resize_limit", "limit_side_len": 960, "limit_type": "max"}
    assert det.spec.preprocess[1]["scale"] == pytest.approx(1 / 255)
    assert cls.spec.labels == ["0", "180"] and cls.spec.input.shape == [None, 3, 48, 192]
    charset = rec.spec.files["rec_dict.txt"].splitlines()
    assert charset == (OCR / "ch_PP-OCRv4_rec" / "ppocr_keys_v1.txt").read_text(encoding="utf-8").splitlines()


def test_missing_weights_file_is_a_clear_error(tmp_path):
    folder = copy_export("ch_ppocr_mobile_v2_cls", tmp_path)
    (folder / "inference.pdiparams").unlink()
    with pytest.raises(ConversionError) as err:
        load_source(folder / "inference.pdmodel")
    assert "inference.pdiparams" in str(err.value) and "missing" in str(err.value)


def test_metadata_with_an_unknown_postprocess_names_file_and_line(tmp_path):
    folder = copy_export("ch_ppocr_mobile_v2_cls", tmp_path)
    meta = folder / "inference.yml"
    meta.write_text(meta.read_text().replace("ClsPostProcess", "MysteryPostProcess"))
    with pytest.raises(MetadataError) as err:
        load_source(folder)
    assert str(meta) in str(err.value) and "unknown export metadata" in str(err.value)


def test_inconsistent_metadata_names_the_key_and_line(tmp_path):
    folder = copy_export("ch_ppocr_mobile_v2_cls", tmp_path)
    meta = folder / "inference.yml"
    meta.write_text(meta.read_text().replace("      - 48\n", ""))
    with pytest.raises(MetadataError) as err:
        load_source(folder)
    message = str(err.value)
    assert f"{meta}:" in message and "image_shape" in message


def test_truncated_weights_fail_in_the_paddle_step_with_one_line(tmp_path):
    folder = copy_export("ch_ppocr_mobile_v2_cls", tmp_path)
    params = folder / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:100_000])
    with pytest.raises(ConversionError) as err:
        call_paddle_worker("to-onnx", "cls model", model=folder / "inference.pdmodel", params=params,
                           out=tmp_path / "out.onnx")
    assert "\n" not in str(err.value) and "complete or damaged" in str(err.value)
