"""The OpenVINO backend on real models: IRs made here from the shared Paddle exports, checked against onnxruntime
on the same model's ONNX, on real pictures preprocessed plainly (no edge code in the reference path).

The ONNX references: the PP-LCNet orientation `model.onnx` the shared Paddle export was converted from, and
PP-OCRv4 rec as rapidocr_onnxruntime ships it (the official paddle2onnx export of the same weights).
IRs are written with `compress_to_fp16=False`, so an f32 run is compared with FP32 weights.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install \"pp-edge[openvino]\")")

from converters.sources import load_source  # noqa: E402
from runtimes.backends import BACKENDS, create_backend, why_not_loadable  # noqa: E402
from runtimes.backends.openvino import OpenVinoBackend, core  # noqa: E402
from runtimes.bundle import (Artifact, Bundle, BundleFile, Manifest, ModelEntry, Provenance,  # noqa: E402
                             RuntimeOptions, describe_file, write_manifest)
from runtimes.errors import BackendError, BundleError  # noqa: E402
from runtimes.image import read_image  # noqa: E402
from runtimes.tasks import load_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
LCNET = SHARED / "models" / "PP-LCNet" / "PPLCNet_x1_0_text_image_orientation"
OCR = SHARED / "models" / "PP-OCR"
OCR_SOURCES = [OCR / "ch_PP-OCRv4_det", OCR / "ch_ppocr_mobile_v2_cls", OCR / "ch_PP-OCRv4_rec"]
pytestmark = pytest.mark.skipif(not LCNET.is_dir(), reason=f"needs the shared models folder {SHARED}")
HAS_BF16 = "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
ONE_THREAD = RuntimeOptions(threads=1)


def artifact(precision: str, path: str = "model.xml") -> Artifact:
    return Artifact(path=path, format="openvino", precision=precision, target="x86_64", bytes=1, sha256="0")


def save_ir(program: Path, xml: Path) -> Path:
    """An IR of the Paddle program, weights kept FP32 (save_model's default would halve them to FP16)."""
    ov.save_model(ov.convert_model(str(program)), str(xml), compress_to_fp16=False)
    return xml


@pytest.fixture(scope="module")
def irs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("irs")
    return {"lcnet": save_ir(LCNET / "inference.pdmodel", folder / "lcnet.xml"),
            "rec": save_ir(OCR / "ch_PP-OCRv4_rec" / "inference.pdmodel", folder / "rec.xml")}


# --- plain preprocessing (what the exports' metadata says, written out by hand) --------------------------

def lcnet_input(name: str) -> np.ndarray:
    """RGB, short side 256 (bilinear), centre 224 crop, /255, ImageNet mean/std, CHW."""
    image = cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    top, left = (image.shape[0] - 224) // 2, (image.shape[1] - 224) // 2
    crop = image[top:top + 224, left:left + 224].astype(np.float32) / 255.0
    crop = (crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return crop.transpose(2, 0, 1)[None].astype(np.float32)


def rec_input(name: str) -> np.ndarray:
    """BGR, height 48 keeping the aspect ratio (so every word has its own width), (x/255-0.5)/0.5, CHW."""
    image = cv2.imread(str(IMAGES / name))
    h, w = image.shape[:2]
    image = cv2.resize(image, (max(8, round(w * 48 / h)), 48), interpolation=cv2.INTER_LINEAR)
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)


def onnxruntime_outputs(model: Path, feed: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


# --- against onnxruntime ----------------------------------------------------------------------------

def test_registered_and_loadable_here():
    assert BACKENDS["openvino"] is OpenVinoBackend
    assert why_not_loadable(artifact("fp32")) is None


def test_fp32_ir_matches_onnxruntime_on_real_pictures(irs):
    batch = np.concatenate([lcnet_input("cls_img_rot0_demo.jpg"), lcnet_input("cls_img_rot180_demo.jpg")])
    backend = create_backend("openvino", irs["lcnet"], ONE_THREAD, artifact=artifact("fp32"))
    assert backend.providers_in_use == ["OpenVINO CPU (f32)"]
    assert backend.input_names == ["x"] and len(backend.output_names) == 1
    got = backend.run({"x": batch})
    want = onnxruntime_outputs(LCNET / "model.onnx", batch)
    assert len(got) == 1 and got[0].shape == want[0].shape == (2, 4)
    assert np.abs(got[0] - want[0]).max() < 1e-4
    assert list(got[0].argmax(axis=1)) == [0, 2]        # labels 0/90/180/270: upright and upside down


def test_rec_with_dynamic_width_matches_onnxruntime_word_by_word(irs):
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr_onnxruntime (the ONNX of PP-OCRv4 rec) is not installed")
    onnx_rec = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    backend = create_backend("openvino", irs["rec"], ONE_THREAD, artifact=artifact("fp32"))
    words = ["ocr_word_ch_1.jpg", "ocr_word_en_10.png", "ocr_word_ch_1.jpg"]   # width changes both ways
    feeds = [rec_input(name) for name in words]
    assert len({f.shape[3] for f in feeds}) == 2
    for feed in feeds:
        got = backend.run({backend.input_names[0]: feed})[0]
        want = onnxruntime_outputs(onnx_rec, feed)[0]
        assert got.shape == want.shape and got.shape[1] == -(-feed.shape[3] // 8)     # one step per 8 columns
        assert np.abs(got - want).max() < 1e-3
        assert np.array_equal(got.argmax(axis=2), want.argmax(axis=2))      # the same CTC path


# --- precision, threads and properties -------------------------------------------------------------

def test_bf16_artifact_runs_in_bf16_and_says_so(irs, caplog):
    batch = lcnet_input("cls_img_rot180_demo.jpg")
    with caplog.at_level(logging.WARNING, logger="runtimes.backends.openvino"):
        bf16 = create_backend("openvino", irs["lcnet"], ONE_THREAD, artifact=artifact("bf16"))
    if HAS_BF16:
        assert bf16.providers_in_use == ["OpenVINO CPU (bf16)"] and not caplog.records
    else:   # a CPU without AVX512-BF16/AMX runs it in f32 and warns
        assert bf16.providers_in_use == ["OpenVINO CPU (f32)"] and "no BF16 support" in caplog.text
    fp32 = create_backend("openvino", irs["lcnet"], ONE_THREAD, artifact=artifact("fp32"))
    low, full = bf16.run({"x": batch})[0], fp32.run({"x": batch})[0]
    assert low.argmax() == full.argmax() == 2 and np.abs(low - full).max() < 0.05
    if HAS_BF16:
        assert np.abs(low - full).max() > 0           # it really computed something else than f32


@pytest.mark.skipif(not HAS_BF16, reason="OpenVINO defaults to f32 anyway on a CPU without bf16")
def test_fp32_artifact_is_held_to_f32_where_openvino_would_pick_bf16(irs):
    asks_bf16 = RuntimeOptions(threads=1, openvino={"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"})
    unknown = create_backend("openvino", irs["lcnet"], ONE_THREAD)          # no artifact: OpenVINO's default
    assert unknown.providers_in_use == ["OpenVINO CPU (bf16)"]
    for precision in ("fp32", "int8"):
        backend = create_backend("openvino", irs["lcnet"], asks_bf16, artifact=artifact(precision))
        assert backend.providers_in_use == ["OpenVINO CPU (f32)"]
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_threads_and_profile_properties_reach_the_compiled_model(irs):
    runtime = RuntimeOptions(threads=2, openvino={"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2})
    backend = create_backend("openvino", irs["lcnet"], runtime, artifact=artifact("fp32"))
    compiled = backend.compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2     # (one thread would allow one stream only)
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT" and compiled.get_property("NUM_STREAMS") == 2


# --- what goes wrong, in one line ------------------------------------------------------------------

def one_line_error(path: Path, runtime: RuntimeOptions = ONE_THREAD) -> str:
    with pytest.raises(BackendError) as caught:
        create_backend("openvino", path, runtime, artifact=artifact("fp32"))
    message = str(caught.value)
    assert "\n" not in message and path.name in message and ".cpp" not in message
    return message


def test_broken_irs_and_bad_properties_give_one_line_errors(irs, tmp_path):
    lonely = tmp_path / "lonely.xml"                       # the .xml without its .bin
    lonely.write_bytes(irs["lcnet"].read_bytes())
    assert "weights file lonely.bin is missing" in one_line_error(lonely)
    cut = tmp_path / "cut.xml"                             # half an .xml, with its real .bin
    cut.write_bytes(irs["lcnet"].read_bytes()[:50000])
    (tmp_path / "cut.bin").write_bytes(irs["lcnet"].with_suffix(".bin").read_bytes())
    assert "cannot read cut.xml" in one_line_error(cut)
    short = tmp_path / "short.xml"                         # the .bin cut short
    short.write_bytes(irs["lcnet"].read_bytes())
    (tmp_path / "short.bin").write_bytes(irs["lcnet"].with_suffix(".bin").read_bytes()[:4096])
    assert "Incorrect weights" in one_line_error(short)
    assert "PERFORMANCE_HINT" in one_line_error(irs["lcnet"], RuntimeOptions(openvino={"PERFORMANCE_HINT": "FAST"}))
    backend = create_backend("openvino", irs["lcnet"], ONE_THREAD, artifact=artifact("fp32"))
    with pytest.raises(BackendError, match=r"failed on lcnet.xml \(x \(1, 3, 100, 224\)\)"):
        backend.run({"x": np.zeros((1, 3, 100, 224), np.float32)})         # this IR's H/W are fixed
    with pytest.raises(BackendError, match="input x not given"):
        backend.run({})


def test_without_openvino_the_format_is_listed_unavailable_with_how_to_install():
    hide = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'openvino': raise ImportError('No module named openvino')\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from runtimes.backends import BACKENDS, UNAVAILABLE\n"
            "print(sorted(BACKENDS)); print(UNAVAILABLE['openvino'])\n")
    proc = subprocess.run([sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    backends, reason = proc.stdout.splitlines()
    assert "'onnx'" in backends and "openvino" not in backends
    assert 'pip install "pp-edge[openvino]"' in reason


# --- a bundle whose artifacts are IRs, through load_task ------------------------------------------

def openvino_bundle(root: Path, sources: list[Path], precision: str) -> Path:
    """A bundle folder made by hand (the converter does not write IRs yet): each export's metadata as the
    converter reads it, its Paddle program as an IR with the .bin listed as a companion."""
    root.mkdir(parents=True)
    entries, files = [], []
    for folder in sources:
        source = load_source(folder)
        spec, xml = source.spec, f"{source.spec.role}.{precision}.xml"
        save_ir(source.model_file, root / xml)
        art = Artifact(format="openvino", precision=precision, target="x86_64",
                       companions=[Path(xml).with_suffix(".bin").name], **describe_file(root, xml))
        files.append(BundleFile(**describe_file(root, Path(xml).with_suffix(".bin").name)))   # hashed, verified
        entries.append(ModelEntry(role=spec.role, name=spec.name, input=spec.input, outputs=[],
                                  preprocess=spec.preprocess, postprocess=spec.postprocess, labels=spec.labels,
                                  artifacts=[art], selected=art.path, decision="made by the test",
                                  source_format=source.format, source_files=[]))
        for name, text in spec.files.items():
            (root / name).write_text(text, encoding="utf-8")
            files.append(BundleFile(**describe_file(root, name)))
    write_manifest(root, Manifest(
        pipeline=spec.task, task=spec.task, models=entries, files=files,
        runtime=RuntimeOptions(threads=1, openvino={"PERFORMANCE_HINT": "LATENCY"}),
        provenance=Provenance(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), profile="test",
                              tools={"openvino": ov.get_version()})))
    return root


def test_orientation_bundle_of_irs_runs_through_load_task(tmp_path):
    task = load_task(Bundle.open(openvino_bundle(tmp_path / "lcnet", [LCNET], "fp32")))
    labels = [task(read_image(IMAGES / name)).results[0]["label"]
              for name in ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg")]
    assert labels == ["0", "180"]
    assert task.runners()["classifier"].backend.providers_in_use == ["OpenVINO CPU (f32)"]


def test_ocr_bundle_of_irs_reads_pages_with_changing_shapes(tmp_path):
    """det sees pages of several sizes, rec lines of several widths, through one request each."""
    reads = {}
    for precision in ("fp32", "bf16"):
        task = load_task(Bundle.open(openvino_bundle(tmp_path / precision, OCR_SOURCES, precision)))
        reads[precision] = {name: [r["text"] for r in task(read_image(IMAGES / name)).results]
                            for name in ("ocr_11.jpg", "ocr_word_ch_1.jpg", "ocr_en_img623.jpg")}
        want = "bf16" if precision == "bf16" and HAS_BF16 else "f32"
        assert {r.backend.providers_in_use[0] for r in task.runners().values()} == {f"OpenVINO CPU ({want})"}
    fp32 = reads["fp32"]
    assert fp32["ocr_word_ch_1.jpg"] == ["韩国小馆"]
    assert {"纯臻营养护发素", "【产品编号】：YM-X-3011", "【净含量】：220ml"} <= set(fp32["ocr_11.jpg"])
    assert "www.flavoursofiloilo.blogspot.com" in fp32["ocr_en_img623.jpg"]
    same = sum(line in fp32["ocr_11.jpg"] for line in reads["bf16"]["ocr_11.jpg"])
    assert same >= 0.9 * len(fp32["ocr_11.jpg"]), (reads["bf16"]["ocr_11.jpg"], fp32["ocr_11.jpg"])


def test_a_tampered_ir_weights_file_is_caught_by_verify(tmp_path):
    root = openvino_bundle(tmp_path / "lcnet", [LCNET], "fp32")
    assert Bundle.open(root).verify() == []
    weights = root / "classifier.fp32.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF                       # same size, one byte flipped
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"classifier.fp32.bin does not match its sha256 \(modified or corrupt\)"):
        Bundle.open(root)


def test_a_manifest_whose_companion_is_not_hashed_is_refused(tmp_path):
    root = openvino_bundle(tmp_path / "lcnet", [LCNET], "fp32")
    raw = json.loads((root / "manifest.json").read_text())
    raw["files"] = [f for f in raw["files"] if not f["path"].endswith(".bin")]
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="classifier.fp32.bin not listed in 'files'"):
        Bundle.open(root)
