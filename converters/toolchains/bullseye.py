"""Debian bullseye's CPython 3.9, unpacked without root: the interpreter for Paddle Lite's wheel on a
machine that has no CPython 3.8-3.10 (measured route: ../shared/notes/paddle-lite.md).

apt-get runs with a private state (its own sources.list, lists, cache, an empty dpkg status), so the
host's apt configuration and installed packages are neither read as state nor changed; `apt-get
download` and `dpkg -x` work as a normal user.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .base import ToolchainError, run_step

MIRROR = "http://deb.debian.org/debian"
SUITE = "bullseye"
PACKAGES = ("python3.9-minimal", "libpython3.9-minimal", "libpython3.9-stdlib", "python3-distutils",
            "python3-lib2to3", "libssl1.1", "libffi7", "libmpdec3")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def _apt_options(state: Path) -> list[str]:
    for folder in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    signed = f" [signed-by={KEYRING}]" if KEYRING.exists() else ""   # else the host's trusted keys
    (state / "sources.list").write_text(f"deb{signed} {MIRROR} {SUITE} main\n", encoding="utf-8")
    options = {"Dir::Etc::SourceList": state / "sources.list", "Dir::Etc::SourceParts": state / "sources.list.d",
               "Dir::Etc::PreferencesParts": state / "preferences.d", "Dir::Etc::Preferences": "/dev/null",
               "Dir::State::Lists": state / "lists", "Dir::Cache": state / "cache",
               "Dir::State::status": "/dev/null"}
    if os.geteuid() == 0:
        # as root apt downloads as the _apt user, who cannot write into root's cache folder
        options["APT::Sandbox::User"] = "root"
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def unpack_bullseye_python(prefix: Path, state: Path, toolchain: str) -> tuple[Path, Path, str]:
    """Download and unpack the interpreter into `prefix`; returns (python3.9, its library folder, what
    was unpacked). `state` holds apt's private state and the .deb files; the caller deletes it."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise ToolchainError(f"{toolchain}: needs a CPython 3.8, 3.9 or 3.10 on this machine (none found) "
                                 f"or Debian's {tool} to fetch one; install python3.10 and run it again")
    options = _apt_options(state)
    run_step(["apt-get", *options, "update"], f"apt-get update (Debian {SUITE})", toolchain, timeout=600)
    debs = state / "debs"
    debs.mkdir(exist_ok=True)
    run_step(["apt-get", *options, "download", *PACKAGES], f"apt-get download of Debian {SUITE}'s python3.9",
             toolchain, timeout=600, cwd=debs)
    files = sorted(debs.glob("*.deb"))
    if len(files) != len(PACKAGES):
        raise ToolchainError(f"{toolchain}: apt-get download brought {len(files)} of {len(PACKAGES)} packages")
    prefix.mkdir(parents=True, exist_ok=True)
    for deb in files:
        run_step(["dpkg", "-x", str(deb), str(prefix)], f"unpacking {deb.name}", toolchain)
    python = prefix / "usr" / "bin" / "python3.9"
    if not python.exists():
        raise ToolchainError(f"{toolchain}: {python} is missing after unpacking Debian's python3.9")
    versions = ", ".join(deb.name.split("_")[1] for deb in files if deb.name.startswith("python3.9-minimal_"))
    return python, prefix / "usr" / "lib" / "x86_64-linux-gnu", f"python3.9-minimal {versions}"
