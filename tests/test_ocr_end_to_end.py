"""The whole path for PP-OCR on x86: Paddle export -> `edge convert` (INT8 where it earns it) -> bundle ->
`edge inspect` / `edge infer` -> the same text as the FP32 pipeline within the accuracy budget."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


from converters.metrics import cer
from runtimes.bundle import Bundle
from runtimes.image import read_image
from runtimes.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
OCR_IMAGES = ["ocr_word_en_10.png", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg", "ocr_1.jpg", "ocr_11.jpg"]
CER_BUDGET = 0.02


def edge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_manifest_records_roles_sources_choices_and_measurements(ocr_bundle_dir):
    manifest = Bundle.open(ocr_bundle_dir).manifest
    assert (manifest.schema_version, manifest.task, manifest.pipeline) == (1, "ocr", "ppocr")
    assert [m.role for m in manifest.models] == ["det", "cls", "rec"]
    assert manifest.provenance.profile == "x86-vnni"
    assert {"paddlepaddle", "paddle2onnx", "onnxruntime"} <= set(manifest.provenance.tools)
    for entry in manifest.models:
        assert entry.source_format == "paddle-legacy" and len(entry.source_files) == 3
        assert any(a.precision == "fp32" for a in entry.artifacts), entry.role
        fp32 = next(a for a in entry.artifacts if a.precision == "fp32")
        assert fp32.metrics["paddle_max_abs_diff"] < 1e-3       # the ONNX equals Paddle Inference
        chosen = entry.selected_artifact()
        assert entry.decision
        if chosen.precision == "int8":
            # an INT8 artifact ships only when it is faster and within the family's budget
            assert chosen.metrics["latency_ratio"] < 1.0
            budget_metric = {"det": "box_f1", "cls": "top1", "rec": "cer"}[entry.role]
            value = next(v for k, v in chosen.metrics.items() if k.startswith(budget_metric))
            assert value <= CER_BUDGET if entry.role == "rec" else value >= 0.99
            if entry.role == "det":     # and what a user reads through that det changed by at most the CER budget
                assert chosen.metrics["page_text_cer vs fp32"] <= CER_BUDGET
    rec = manifest.model("rec")
    assert rec.postprocess["character_dict"] in {f.path for f in manifest.files}


def test_int8_bundle_reads_what_fp32_reads_within_budget(ocr_bundle_dir, shared_dir):
    bundle = Bundle.open(ocr_bundle_dir)
    ours, reference = load_task(bundle), load_task(bundle.with_precision("fp32"))
    got, want = [], []
    for name in OCR_IMAGES:
        image = read_image(shared_dir / "images" / name)
        got.append("".join(r["text"] for r in ours(image).results))
        want.append("".join(r["text"] for r in reference(image).results))
    assert cer(got, want) <= CER_BUDGET, list(zip(got, want))
    assert got[0] == "PAIN" and got[1] == "韩国小馆"


def test_infer_json_prints_one_result_object_per_image(ocr_bundle_dir, shared_dir):
    images = [str(shared_dir / "images" / n) for n in ("ocr_word_en_10.png", "ocr_word_ch_1.jpg")]
    proc = edge("infer", str(ocr_bundle_dir), *images, "--json", "--device-id", "cam0")
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["schema"] for m in messages] == ["edge.result/1"] * 2
    assert [m["results"][0]["text"] for m in messages] == ["PAIN", "韩国小馆"]
    assert all(set(m["latency_ms"]) == {"pre", "infer", "post"} and m["device"] == "cam0" for m in messages)
    box = messages[0]["results"][0]["box"]
    assert len(box) == 4 and all(len(point) == 2 for point in box)


def test_infer_reports_a_bad_image_and_still_reads_the_good_one(ocr_bundle_dir, shared_dir, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image at all")
    good = shared_dir / "images" / "ocr_word_en_10.png"
    proc = edge("infer", str(ocr_bundle_dir), str(bad), str(good), "--json")
    assert proc.returncode != 0
    assert "notes.jpg: not a decodable image" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.strip())["results"][0]["text"] == "PAIN"


def test_inspect_verifies_hashes_and_refuses_a_tampered_artifact(ocr_bundle_dir, tmp_path):
    ok = edge("inspect", str(ocr_bundle_dir))
    assert ok.returncode == 0 and "verified" in ok.stdout, ok.stderr
    copy = tmp_path / "bundle"
    shutil.copytree(ocr_bundle_dir, copy)
    victim = copy / Bundle.open(copy).manifest.model("rec").selected
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = edge("inspect", str(copy))
    assert bad.returncode != 0 and "does not match its sha256" in bad.stderr
    refused = edge("infer", str(copy), str(ROOT / "README.md"))
    assert refused.returncode != 0 and "failed verification" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_convert_for_a_profile_it_cannot_build_yet_says_which_artifact(shared_dir, tmp_path):
    """A user's edited copy of a profile asking for an artifact no builder makes (Paddle Lite has no bf16)."""
    det = shared_dir / "models" / "PP-OCR" / "ch_PP-OCRv4_det"
    profile = tmp_path / "my-pi.yaml"
    text = (ROOT / "device_profiles" / "rpi5.yaml").read_text()
    profile.write_text(text.replace("name: rpi5", "name: my-pi").replace("precision: fp16", "precision: bf16"))
    proc = edge("convert", str(det), "--profile", str(profile), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "paddle_lite bf16" in lines[0] and "cannot build yet" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_convert_int8_without_calibration_images_is_refused(shared_dir, tmp_path):
    det = shared_dir / "models" / "PP-OCR" / "ch_PP-OCRv4_det"
    rec = shared_dir / "models" / "PP-OCR" / "ch_PP-OCRv4_rec"
    proc = edge("convert", str(det), str(rec), "--profile", "x86-vnni", "-o", str(tmp_path / "b"))
    assert proc.returncode != 0 and "--calib" in proc.stderr and "Traceback" not in proc.stderr
