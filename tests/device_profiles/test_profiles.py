from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import device_profiles
from runtimes.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"rpi4", "rpi5", "jetson-nano", "jetson-orin", "x86-avx2", "x86-vnni", "x86-amx"}


def test_every_shipped_profile_loads_and_has_an_fp32_fallback():
    profiles = {p.name: p for p in device_profiles.load_all()}
    assert REQUIRED <= set(profiles)
    for profile in profiles.values():
        assert any(a.precision == "fp32" for a in profile.artifacts), profile.name
    assert profiles["x86-vnni"].artifacts[0].precision == "int8"
    assert profiles["jetson-orin"].runtime.providers[0] == "TensorrtExecutionProvider"
    assert profiles["rpi4"].arch == "aarch64"


def test_detect_picks_a_shipped_x86_profile_here():
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("detection check written for the x86_64 CI machine")
    assert device_profiles.detect().name in {"x86-avx2", "x86-vnni", "x86-amx"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """name: mine
description: my box
family: x86
arch: x86_64
threads: 2
artifacts:
  - format: onnx
    precision: fp32
"""


def test_a_typo_is_reported_with_file_line_and_field(tmp_path):
    path = write(tmp_path, GOOD.replace("threads: 2", "thread: 2"))
    with pytest.raises(ConfigError) as err:
        device_profiles.load(path)
    assert str(err.value) == f"{path}:5: thread: unknown field (check the spelling)"


def test_a_bad_value_deep_in_a_list_points_at_its_line(tmp_path):
    path = write(tmp_path, GOOD.replace("precision: fp32", "precision: fp64"))
    with pytest.raises(ConfigError) as err:
        device_profiles.load(path)
    assert f"{path}:8: artifacts.0.precision:" in str(err.value)


def test_int8_without_a_scheme_and_no_fp32_fallback_are_refused(tmp_path):
    path = write(tmp_path, GOOD.replace("precision: fp32", "precision: int8"))
    with pytest.raises(ConfigError) as err:
        device_profiles.load(path)
    assert "quantization" in str(err.value)


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, GOOD + "  - format: [onnx\n")
    with pytest.raises(ConfigError) as err:
        device_profiles.load(path)
    assert str(err.value).startswith(f"{path}:") and "invalid YAML" in str(err.value)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError) as err:
        device_profiles.load("raspberry")
    assert "x86-vnni" in str(err.value)


def run_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_profiles_list_show_validate(tmp_path):
    listing = run_edge("profiles", "list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in REQUIRED)
    shown = run_edge("profiles", "show", "jetson-orin")
    assert shown.returncode == 0 and "TensorrtExecutionProvider" in shown.stdout
    good = run_edge("profiles", "validate", str(write(tmp_path, GOOD)))
    assert good.returncode == 0 and "valid profile 'mine'" in good.stdout
    bad = run_edge("profiles", "validate", str(write(tmp_path, GOOD.replace("family: x86", "famly: x86"))))
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and ":3: famly: unknown field" in lines[0] and "Traceback" not in bad.stderr
