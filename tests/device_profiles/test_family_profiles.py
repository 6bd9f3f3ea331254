"""Family names users type (`--profile rpi`, `--profile jetson`) and the profile rules for ARM artifacts."""
from __future__ import annotations

import pytest

import device_profiles
from runtimes.errors import ConfigError

from .test_profiles import run_edge, write


def test_family_profiles_build_only_what_every_member_loads():
    families = device_profiles.families()
    assert families == {"rpi": ["rpi4", "rpi5"], "jetson": ["jetson-nano", "jetson-orin"]}
    rpi = device_profiles.load("rpi")
    for member in map(device_profiles.load, families["rpi"]):
        labels = {a.label() for a in member.artifacts}
        assert {a.label() for a in rpi.artifacts} <= labels, member.name
    assert not any(a.precision == "fp16" for a in rpi.artifacts)          # the Pi 4's A72 has no FP16 arithmetic
    assert rpi.cpu == "cortex-a72"                                        # emulated as the oldest member
    jetson = device_profiles.load("jetson")
    assert [a.precision for a in jetson.artifacts] == ["int8", "fp16", "fp32"]


def test_pi5_alone_asks_for_paddle_lite_fp16_and_the_pi4_cannot(tmp_path):
    assert any(a.format == "paddle_lite" and a.precision == "fp16" for a in device_profiles.load("rpi5").artifacts)
    text = (device_profiles.PROFILE_DIR / "rpi4.yaml").read_text().replace(
        "  - format: paddle_lite\n    precision: fp32", "  - format: paddle_lite\n    precision: fp16")
    with pytest.raises(ConfigError) as err:
        device_profiles.load(write(tmp_path, text.replace("name: rpi4", "name: mine")))
    assert "FP16 arithmetic" in str(err.value)


def test_a_family_member_that_cannot_load_an_artifact_is_refused(tmp_path):
    text = (device_profiles.PROFILE_DIR / "rpi.yaml").read_text().replace("members: [rpi4, rpi5]",
                                                                         "members: [rpi4, jetson-nano]")
    with pytest.raises(ConfigError) as err:
        device_profiles.load(write(tmp_path, text.replace("name: rpi", "name: mine")))
    assert "members" in str(err.value) and "jetson-nano" in str(err.value)


def test_paddle_lite_int8_must_be_symmetric(tmp_path):
    text = (device_profiles.PROFILE_DIR / "rpi4.yaml").read_text().replace(
        "precision: int8\n    quantization: qdq-s8a-s8w", "precision: int8\n    quantization: qdq-u8a-s8w", 1)
    with pytest.raises(ConfigError) as err:
        device_profiles.load(write(tmp_path, text.replace("name: rpi4", "name: mine")))
    assert "symmetric" in str(err.value)


def test_cli_lists_families_and_shows_the_backend_each_artifact_needs():
    listing = run_edge("profiles", "list")
    assert listing.returncode == 0
    assert any(line.split()[0] == "rpi" and "family: rpi4, rpi5" in line for line in listing.stdout.splitlines())
    shown = run_edge("profiles", "show", "rpi4")
    assert shown.returncode == 0
    needs = [line for line in shown.stdout.splitlines() if line.startswith("#   ")]
    assert [line.split()[1] for line in needs] == ["paddle_lite", "onnx", "paddle_lite", "onnx"]
    assert all("Paddle Lite" in line for line in needs if "paddle_lite" in line)
    assert all("onnxruntime" in line for line in needs if " onnx " in line)


def test_jetson_family_is_buildable_so_a_bad_export_is_what_gets_refused():
    proc = run_edge("convert", "nowhere", "--profile", "jetson")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[0].endswith("profile jetson: onnx int8 (qdq-s8a-s8w), onnx fp16, onnx fp32")    # progress
    assert lines[1:] == ["edge convert: error: nowhere: no such file or folder"]
