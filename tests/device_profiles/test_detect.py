"""`edge profiles detect`: real files from real boards and CPUs (fixtures/SOURCES.md) name the right profile."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import device_profiles
from device_profiles.detect import Detection, detect_profile, parse_cpuinfo
from runtimes.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# fixture folder, machine, expected profile, evidence every one of which a reason must name
BOARDS = [
    ("rpi4", "aarch64", "rpi4",
     ["/proc/device-tree/model: Raspberry Pi 4 Model B Rev 1.4", "CPU part 0xd08 = Cortex-A72"]),
    ("rpi5", "aarch64", "rpi5",
     ["/proc/device-tree/model: Raspberry Pi 5 Model B Rev 1.0", "brcm,bcm2712", "CPU part 0xd0b = Cortex-A76"]),
    ("jetson-nano", "aarch64", "jetson-nano",
     ["/proc/device-tree/model: NVIDIA Jetson Nano Developer Kit", "compatible: nvidia,tegra210",
      "/etc/nv_tegra_release: R32 (release), REVISION: 3.1, BOARD: t210ref", "CPU part 0xd07 = Cortex-A57"]),
    ("jetson-orin", "aarch64", "jetson-orin",
     ["/proc/device-tree/model: NVIDIA Orin Nano Developer Kit", "compatible: nvidia,tegra234"]),
    ("x86-avx2", "x86_64", "x86-avx2", ["/proc/cpuinfo flags: avx2"]),
    ("x86-avx512-vnni", "x86_64", "x86-vnni", ["/proc/cpuinfo flags: avx512_vnni"]),
    ("x86-avx-vnni", "x86_64", "x86-vnni", ["/proc/cpuinfo flags: avx_vnni"]),
    ("x86-amx", "x86_64", "x86-amx", ["/proc/cpuinfo flags: amx_tile, amx_int8, amx_bf16", "AMX"]),
    ("x86-amx-this-host", "x86_64", "x86-amx", ["/proc/cpuinfo flags: amx_tile, amx_int8, amx_bf16", "AMX"]),
]


def named(found: Detection, evidence: str) -> bool:
    return any(evidence in reason for reason in found.reasons)


@pytest.mark.parametrize("folder, machine, profile, evidence", BOARDS, ids=[case[0] for case in BOARDS])
def test_each_real_device_detects_as_its_profile_naming_the_evidence(folder, machine, profile, evidence):
    found = detect_profile(FIXTURES / folder, machine)
    assert (found.profile, found.guess, found.machine) == (profile, False, machine), found.reasons
    missing = [e for e in evidence if not named(found, e)]
    assert not missing, f"{missing} not in {found.reasons}"
    assert dict(found.files)["/proc/cpuinfo"] == ("missing" if folder == "jetson-orin" else "read")


def test_amx_outweighs_the_vnni_and_avx2_it_implies_and_falls_back_to_them():
    found = detect_profile(FIXTURES / "x86-amx", "x86_64")
    assert found.profile == "x86-amx" and not any("vnni" in r or "avx2" in r for r in found.reasons)
    # a CPU without AMX is not moved by the new profile
    assert detect_profile(FIXTURES / "x86-avx512-vnni", "x86_64").profile == "x86-vnni"
    # and where x86-amx is not a candidate (an edge without it), the AMX CPU gets x86-vnni from its VNNI flags
    without_amx = [p for p in device_profiles.load_all() if p.name != "x86-amx"]
    found = detect_profile(FIXTURES / "x86-amx", "x86_64", profiles=without_amx)
    assert (found.profile, found.guess) == ("x86-vnni", False) and named(found, "avx512_vnni")
    assert not named(found, "amx")


def test_x86_fixtures_hold_the_flags_they_are_named_for():
    flags = {name: parse_cpuinfo((FIXTURES / name / "proc/cpuinfo").read_text())[0]
             for name in ("x86-avx2", "x86-avx512-vnni", "x86-avx-vnni", "x86-amx")}
    assert "avx2" in flags["x86-avx2"] and not {"avx512_vnni", "avx_vnni"} & flags["x86-avx2"]
    assert "avx512_vnni" in flags["x86-avx512-vnni"] and "amx_tile" not in flags["x86-avx512-vnni"]
    assert "avx_vnni" in flags["x86-avx-vnni"] and "avx512f" not in flags["x86-avx-vnni"]
    assert {"amx_tile", "amx_int8", "amx_bf16"} <= flags["x86-amx"]


def test_a_cpu_part_alone_is_a_guess_and_says_so():
    orin_cores = detect_profile(FIXTURES / "tegra234-cpuinfo-excerpt", "aarch64")
    assert (orin_cores.profile, orin_cores.guess) == ("jetson-orin", True)
    assert named(orin_cores, "CPU part 0xd42 = Cortex-A78AE") and named(orin_cores, "best guess")
    # an ARM server (AWS Graviton, Cortex-A72, no device tree) is no Pi: the closest profile, as a guess
    graviton = detect_profile(FIXTURES / "arm-unknown-board", "aarch64")
    assert (graviton.profile, graviton.guess) == ("rpi4", True)
    assert named(graviton, "CPU part 0xd08 = Cortex-A72") and named(graviton, "best guess")


def test_an_unknown_arm_core_is_guessed_from_its_features(tmp_path):
    # Cortex-A55 (0xd05) is in no rule; its ARMv8.2 features (dotprod, fp16) are what rpi5 expects
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
        "asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n")
    found = detect_profile(tmp_path, "aarch64")
    assert (found.profile, found.guess) == ("rpi5", True) and named(found, "a guess")


def test_missing_or_garbled_files_still_give_an_answer(tmp_path):
    empty = detect_profile(tmp_path, "x86_64")
    assert (empty.profile, empty.guess) == ("x86-avx2", True) and named(empty, "/proc/cpuinfo (missing)")
    assert set(dict(empty.files).values()) == {"missing"}
    assert detect_profile(tmp_path, "aarch64").profile == "rpi4"

    (tmp_path / "proc/device-tree/model").mkdir(parents=True)           # a folder where a file belongs
    (tmp_path / "proc/cpuinfo").write_bytes(b"\xff\xfe\x00garbage::\n:\nflags\n\x89PNG\r\n\x1a\n" * 50)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_bytes(b"\x00\x01\x02")
    found = detect_profile(tmp_path, "aarch64")
    assert (found.profile, found.guess) == ("rpi4", True)
    assert dict(found.files)["/proc/device-tree/model"].startswith("unreadable")
    assert detect_profile(tmp_path, "x86_64").profile == "x86-avx2"


def test_a_32_bit_os_on_a_pi_says_the_artifacts_need_64_bit():
    found = detect_profile(FIXTURES / "rpi4", "armv7l")
    assert found.profile == "rpi4" and named(found, "32-bit (armv7l)")


def test_an_architecture_no_profile_is_for_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="riscv64"):
        detect_profile(FIXTURES / "rpi4", "riscv64")


def test_package_detect_still_returns_the_profile():
    profile = device_profiles.detect()
    assert isinstance(profile, device_profiles.Profile)
    assert profile.name == detect_profile().profile


def run_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def this_host_has_amx() -> bool:
    return platform.machine() == "x86_64" and "amx_tile" in Path("/proc/cpuinfo").read_text()


@pytest.mark.skipif(not this_host_has_amx(), reason="written for the x86 AMX machine this project is built on")
def test_cli_detect_json_on_this_machine_names_x86_amx():
    result = run_edge("profiles", "detect", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["profile"] == "x86-amx" and answer["guess"] is False and answer["machine"] == "x86_64"
    assert any("AMX" in reason for reason in answer["reasons"])
    assert answer["files"]["/proc/cpuinfo"] == "read"
    listing = run_edge("profiles", "list")
    starred = [line for line in listing.stdout.splitlines() if line.startswith("*")]
    assert len(starred) == 1 and starred[0].split()[1] == "x86-amx"


def test_cli_detect_reads_another_root_and_never_shows_a_traceback(tmp_path):
    pi = run_edge("profiles", "detect", "--root", str(FIXTURES / "rpi4"), "--machine", "aarch64")
    assert pi.returncode == 0, pi.stderr
    lines = pi.stdout.splitlines()
    assert lines[0].startswith("rpi4: ") and "  - CPU part 0xd08 = Cortex-A72" in lines

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_bytes(bytes(range(256)) * 8)
    garbled = run_edge("profiles", "detect", "--json", "--root", str(tmp_path), "--machine", "x86_64")
    assert garbled.returncode == 0 and "Traceback" not in garbled.stderr
    assert json.loads(garbled.stdout)["guess"] is True

    nowhere = run_edge("profiles", "detect", "--root", str(tmp_path / "absent"))
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1 and "no such folder" in nowhere.stderr
