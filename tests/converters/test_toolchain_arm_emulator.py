"""`arm-emulator`: the real install (Debian bookworm .debs + aarch64 wheels), what it runs, and its failures.

Everything here is x86_64 running aarch64 code in qemu user emulation; no ARM board is involved.
"""
from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
from pathlib import Path

import pytest

from converters.toolchains import TOOLCHAINS, ToolchainError, toolchain
from converters.toolchains.arm_emulator import NAME, ROOT_PACKAGES, ArmEmulatorToolchain, emulated_python
from runtimes.toolpaths import READY_FILE

from .arm_emulator_setup import DOWNLOADS, TEST_CACHE, edge_cache, install_emulator


@pytest.fixture(scope="module")
def emulator():
    with edge_cache(TEST_CACHE):
        yield install_emulator()


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _emulated(cpu: str, code: str, extra_env: dict[str, str] | None = None) -> str:
    argv, env = emulated_python(cpu)
    proc = subprocess.run([*argv, "-c", code], env={**os.environ, **env, **(extra_env or {})},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_registered_under_its_name():
    assert NAME in TOOLCHAINS and isinstance(toolchain(NAME), ArmEmulatorToolchain)


def test_installed_toolchain_reports_its_versions(emulator):
    status = emulator.status()
    assert status.installed, status.detail
    info = status.info
    assert info["onnxruntime"] == importlib.metadata.version("onnxruntime")      # the host's version, aarch64
    assert info["python"].startswith("3.11.") and info["qemu"].startswith("qemu-aarch64 version 7.2")
    assert info["sizes"]["root_mb"] > info["sizes"]["of_which_wheels_mb"] > 50
    assert set(info["cpus"]) >= {"cortex-a72", "cortex-a76"}
    assert f"onnxruntime {info['onnxruntime']}" in status.detail


@pytest.mark.parametrize("cpu, part", [("cortex-a72", "0xd08"), ("cortex-a76", "0xd0b")])
def test_emulated_python_is_aarch64_and_sees_that_cores_cpuinfo(emulator, cpu, part):
    out = _emulated(cpu, "import platform; print(platform.machine()); print(open('/proc/cpuinfo').read())")
    assert out.split()[0] == "aarch64"
    assert f"CPU part\t: {part}" in out and "GenuineIntel" not in out and "AuthenticAMD" not in out


def test_host_python_path_does_not_leak_into_the_emulated_python(emulator):
    # the host's x86 onnxruntime on PYTHONPATH must not be what the emulated interpreter imports
    host_site = str(Path(importlib.metadata.distribution("onnxruntime").locate_file("")))
    out = _emulated("cortex-a72", "import onnxruntime; print(onnxruntime.__file__)", {"PYTHONPATH": host_site})
    assert out.strip().startswith(str(emulator.path)), out


def test_second_install_is_a_noop(emulator):
    ready = emulator.path / READY_FILE
    before = (ready.stat().st_mtime_ns, ready.read_text())
    said: list[str] = []
    status = ArmEmulatorToolchain(said.append).install()
    assert status.installed and said == []
    assert (ready.stat().st_mtime_ns, ready.read_text()) == before


def test_reinstall_after_remove_reuses_the_downloads(emulator, tmp_path):
    """A fresh toolchain folder, the test cache's downloads: nothing is downloaded again."""
    cached = {p: p.stat().st_mtime_ns for p in DOWNLOADS.rglob("*") if p.suffix in (".deb", ".whl")}
    debs = len(ROOT_PACKAGES) + 1           # + qemu-user-static
    assert len([p for p in cached if p.suffix == ".deb"]) >= debs and any(p.suffix == ".whl" for p in cached)
    said: list[str] = []
    with edge_cache(tmp_path / "cache"):
        chain = ArmEmulatorToolchain(said.append, downloads=DOWNLOADS)
        assert chain.install().installed
        assert any(f"{debs} of {debs} .debs were in the download cache" in line for line in said), said
        assert chain.remove() and not chain.path.exists()
        assert not chain.status().installed
    assert {p: p.stat().st_mtime_ns for p in cached} == cached


def test_unreachable_archive_fails_in_one_line_and_leaves_nothing(tmp_path):
    with edge_cache(tmp_path / "cache"):
        chain = ArmEmulatorToolchain(mirror=f"http://127.0.0.1:{_closed_port()}/debian",
                                     downloads=tmp_path / "downloads")
        with pytest.raises(ToolchainError) as caught:
            chain.install()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{NAME}: fetching the Debian bookworm package lists")
        assert "cannot be reached" in message
        assert not chain.path.exists() and not list(chain.path.parent.glob(f".{NAME}.staging-*"))
        assert chain.status().detail.startswith("not installed")


def test_running_it_without_install_says_how_to_install(tmp_path):
    with edge_cache(tmp_path / "empty"):
        with pytest.raises(ToolchainError, match=f"edge toolchain install {NAME}"):
            emulated_python("cortex-a72")
        with pytest.raises(ToolchainError, match="no CPU model 'cortex-a99'"):
            ArmEmulatorToolchain().python_argv("cortex-a99")
