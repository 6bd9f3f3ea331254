"""A Jetson bundle the whole way, for the names users type: `edge convert --profile jetson` (and the Nano's
own profile) on the PP-LCNet orientation model's PIR export, then read back and run on this x86 host.

What the manifest must say: FP16 and TensorRT-form INT8 and FP32 ONNX were each judged here by the family
metric on a CPU runtime, the INT8 file passed the structural check, and TensorRT and CUDA did not run (no
NVIDIA GPU here); nothing runs under the ARM emulator (a Jetson's models run on its GPU, not its CPU). The
Nano (Maxwell, no INT8 tensor cores) gets FP16 and FP32 only. On x86 the TensorRT-first bundle runs on
onnxruntime's CPU provider and says so, through `edge infer` and through the daemon to MQTT.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtimes.bundle import Bundle

from .conftest import REPO_ROOT
from .test_families_end_to_end import run_daemon

LCNET_PIR = "PP-LCNet/PPLCNet_x1_0_text_image_orientation/pir"
PICTURES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "ocr_1.jpg", "ocr_11.jpg")
NOT_ON_GPU = "not executed here"


def edge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def convert(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    calib = tmp_path_factory.mktemp("jetson_calib")
    for name in PICTURES:
        shutil.copyfile(shared_dir / "images" / name, calib / name)

    def run(profile: str) -> tuple[Path, str]:
        out = tmp_path_factory.mktemp("bundles") / profile
        proc = edge("convert", str(shared_dir / "models" / LCNET_PIR), "--profile", profile, "--calib", str(calib),
                    "-o", str(out))
        if proc.returncode != 0:
            pytest.fail(f"edge convert --profile {profile} failed: {proc.stderr[-2000:]}", pytrace=False)
        return out, proc.stdout
    return run


@pytest.fixture(scope="module")
def jetson_bundle(convert) -> tuple[Path, str]:
    return convert("jetson")


def test_jetson_ships_int8_fp16_and_fp32_each_judged_here_and_none_claimed_on_the_gpu(jetson_bundle):
    manifest = Bundle.open(jetson_bundle[0]).manifest
    assert manifest.provenance.profile == "jetson"
    assert manifest.runtime.providers[0] == "TensorrtExecutionProvider"
    (entry,) = manifest.models
    assert [(a.format, a.precision) for a in entry.artifacts] == [("onnx", "int8"), ("onnx", "fp16"),
                                                                   ("onnx", "fp32")]
    for artifact in entry.artifacts:
        assert artifact.target == "cuda"
        assert artifact.checks, artifact.path
        assert all(NOT_ON_GPU in (c.not_executed or "") and "TensorRT" in c.not_executed
                   for c in artifact.checks if c.executed.startswith("this")), artifact.path
        assert not any("qemu" in c.executed or "emulat" in c.executed for c in artifact.checks)
        judged = [c for c in artifact.checks if c.value is not None]
        assert all(c.passed and c.value >= c.budget for c in judged), artifact.path
    int8, fp16, _ = entry.artifacts
    assert len([c for c in int8.checks if c.value is not None]) == 1
    form = [c for c in int8.checks if c.metric == "tensorrt_explicit_quantization form"]
    assert len(form) == 1 and form[0].passed and form[0].value is None
    assert len([c for c in fp16.checks if c.value is not None]) == 2     # storage twin, and the file itself
    # INT8 judged on pictures it was not calibrated on
    assert not set(int8.checks[0].calibration_pictures) & set(int8.checks[0].validation_pictures)


def test_the_fp16_file_keeps_float32_inputs_and_outputs(jetson_bundle):
    import onnx
    bundle = Bundle.open(jetson_bundle[0])
    fp16 = onnx.load(str(bundle.path_of(bundle.manifest.models[0].artifacts[1].path)))
    elem = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == elem for v in [*fp16.graph.input, *fp16.graph.output])
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_inspect_names_the_structural_check_and_what_did_not_run(jetson_bundle):
    proc = edge("inspect", str(jetson_bundle[0]))
    assert proc.returncode == 0, proc.stderr
    assert "tensorrt_explicit_quantization form passed" in proc.stdout
    assert "limits: TensorRT (NVIDIA GPU): not executed here" in proc.stdout
    assert "limits: TensorRT and CUDA (NVIDIA GPU): not executed here" in proc.stdout
    assert "ran on TensorRT" not in proc.stdout and "ran on CUDA" not in proc.stdout


def test_jetson_nano_builds_fp16_and_fp32_only(convert):
    bundle, _ = convert("jetson-nano")
    (entry,) = Bundle.open(bundle).manifest.models
    assert [(a.format, a.precision) for a in entry.artifacts] == [("onnx", "fp16"), ("onnx", "fp32")]


def test_on_this_cpu_the_bundle_runs_on_the_cpu_provider_and_says_so(jetson_bundle, shared_dir):
    proc = edge("infer", str(jetson_bundle[0]), str(shared_dir / "images" / "cls_img_rot180_demo.jpg"))
    assert proc.returncode == 0, proc.stderr
    assert "runs on CPUExecutionProvider (TensorrtExecutionProvider, CUDAExecutionProvider not available" \
        in proc.stderr
    assert '"label": "180"' in proc.stdout


def test_daemon_publishes_the_jetson_bundles_results(jetson_bundle, shared_dir, tmp_path, mqtt_broker,
                                                     mqtt_subscriber, edge_daemon):
    message = run_daemon(jetson_bundle[0], shared_dir / "images" / "cls_img_rot180_demo.jpg", tmp_path,
                         mqtt_broker, mqtt_subscriber, edge_daemon)
    assert message["results"][0]["label"] == "180"
