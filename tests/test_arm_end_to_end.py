"""A Raspberry Pi bundle the whole way, for the family name users type: `edge convert --profile rpi` on the
PP-LCNet orientation model's PIR export (so through the PIR -> legacy route), with both toolchains installed
for real, then read back as a user would on this x86 host.

What the manifest must say: every ARM `.nb` was checked through something that really ran here (its x86 twin,
or the quantized program in Paddle Inference) and was itself not executed; every ARM ONNX file was executed
under qemu-aarch64 as the oldest member's CPU (Cortex-A72); INT8 was judged on pictures it was not calibrated
on. On x86 the runtime cannot load the aarch64 `.nb` files and runs the first ONNX artifact instead, through
`edge infer` and through the daemon to MQTT.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from converters.toolchains.paddle_lite import PaddleLiteToolchain
from runtimes.bundle import Bundle

from .conftest import REPO_ROOT
from .converters.arm_emulator_setup import TEST_CACHE, edge_cache, install_emulator
from .test_families_end_to_end import run_daemon

LCNET_PIR = "PP-LCNet/PPLCNet_x1_0_text_image_orientation/pir"
PICTURES = ("cls_img_rot0_demo.jpg", "cls_img_rot180_demo.jpg", "ocr_1.jpg", "ocr_11.jpg")


def edge(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "EDGE_CACHE_DIR": str(TEST_CACHE)})


@pytest.fixture(scope="module")
def rpi_bundle(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    with edge_cache(TEST_CACHE):
        install_emulator()
        PaddleLiteToolchain().install()
    calib = tmp_path_factory.mktemp("rpi_calib")
    for name in PICTURES:
        shutil.copyfile(shared_dir / "images" / name, calib / name)
    out = tmp_path_factory.mktemp("bundles") / "orientation"
    proc = edge("convert", str(shared_dir / "models" / LCNET_PIR), "--profile", "rpi", "--calib", str(calib),
                "-o", str(out), "--no-install")
    if proc.returncode != 0:
        pytest.fail(f"edge convert --profile rpi failed: {proc.stderr[-2000:]}", pytrace=False)
    return out, proc.stdout


def test_every_artifact_says_how_it_was_checked_and_what_did_not_run_here(rpi_bundle):
    manifest = Bundle.open(rpi_bundle[0]).manifest
    assert manifest.provenance.profile == "rpi"
    assert manifest.provenance.tools["paddlelite (opt)"] == "2.13rc0"      # .nb files need this runtime version
    pictures = manifest.metrics["pictures"]
    assert pictures["calibration"] == ["cls_img_rot0_demo.jpg", "ocr_1.jpg"]
    assert pictures["validation"] == ["cls_img_rot180_demo.jpg", "ocr_11.jpg"]
    entry = manifest.model("classifier")
    assert entry.source_format == "paddle-pir"
    labels = [f"{a.format} {a.precision}" for a in entry.artifacts]
    order = ["paddle_lite int8", "onnx int8", "paddle_lite fp32", "onnx fp32"]     # the profile's preference
    assert labels == [label for label in order if label in labels], labels
    assert {"paddle_lite fp32", "onnx fp32"} <= set(labels), entry.decision
    for label in order:                         # each one shipped, or refused with its measured reason
        assert label in entry.decision, (label, entry.decision)
    for art in entry.artifacts:
        assert art.target == "aarch64" and art.checks, art.path
        for check in art.checks:
            assert not set(check.calibration_pictures) & set(check.validation_pictures), check
            assert "Raspberry" not in check.executed and "on a Pi" not in check.executed
        if art.format == "paddle_lite":
            assert all(c.not_executed and "ARM" in c.not_executed for c in art.checks), art.checks
            assert any("x86 twin" in c.executed or "Paddle Inference" in c.executed for c in art.checks)
            assert all(c.passed for c in art.checks if c.passed is not None)
        else:
            emulated = [c for c in art.checks if "qemu-aarch64" in c.executed]
            assert len(emulated) == 1 and "cortex-a72" in emulated[0].executed, art.checks
            assert emulated[0].passed and emulated[0].value == 1.0 and "timing" in emulated[0].not_executed
            assert emulated[0].details["samples"] > 0
    int8 = [a for a in entry.artifacts if a.format == "onnx" and a.precision == "int8"]
    assert all(a.quantization == "qdq-u8a-s8w" for a in int8)      # unsigned activations: same on x86 and ARM


def test_inspect_says_what_loads_here_and_what_each_needs(rpi_bundle):
    proc = edge("inspect", str(rpi_bundle[0]))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "needs Paddle Lite on the device; loads here: no" in text
    assert "needs onnxruntime on the device; loads here: yes" in text
    assert "limits:" in text and "qemu-aarch64" in text and "judged on the other 2" in text


def test_x86_runs_the_first_onnx_artifact_of_a_pi_bundle(rpi_bundle, shared_dir):
    picture = shared_dir / "images" / "cls_img_rot180_demo.jpg"
    proc = edge("-v", "infer", str(rpi_bundle[0]), str(picture), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["results"][0]["label"] == "180"
    assert re.search(r"classifier\.(fp32|int8)\.nb skipped: it is compiled for aarch64", proc.stderr), proc.stderr


def test_daemon_publishes_a_pi_bundles_results_on_x86(rpi_bundle, shared_dir, tmp_path, mqtt_broker, mqtt_subscriber,
                                                     edge_daemon):
    message = run_daemon(rpi_bundle[0], shared_dir / "images" / "cls_img_rot0_demo.jpg", tmp_path, mqtt_broker,
                         mqtt_subscriber, edge_daemon)
    assert message["results"][0]["label"] == "0"
