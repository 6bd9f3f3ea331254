"""`arm-emulator`: an aarch64 CPython 3.11 with the real aarch64 onnxruntime wheel, run by qemu user emulation.

It lets this x86_64 machine execute an ARM ONNX artifact with the very onnxruntime build a Raspberry
Pi runs (its NEON / dot-product kernels, not x86's), on a chosen CPU model: numerics only, never
device speed (emulation is 60-480x slower than this host, measured). Route measured in
../shared/notes/arm-qemu.md; no root:
- qemu-user-static from Debian bookworm (host-architecture .deb, only `qemu-aarch64-static` kept);
- an arm64 root unpacked with `dpkg -x` from bookworm arm64 .debs (python3.11 and the libraries it
  and onnxruntime load), fetched with `apt-get download` under a private apt state;
- aarch64 wheels (onnxruntime at the host's version, numpy, their deps) fetched by the host pip and
  installed into the root's dist-packages, so the emulated Python runs isolated (`-I`): nothing of
  the host's PYTHONPATH or user site can leak x86 modules into it;
- per CPU model a view of the root with an ARM /proc/cpuinfo of that core: onnxruntime reads
  /proc/cpuinfo at import and segfaults on the host's x86 one (qemu's -L redirects the path).

Downloads are kept in cache_root()/downloads/arm-emulator, so a re-install after `remove` reuses
them (same sha256 as the archive lists: nothing is downloaded twice). EDGE_ARM_DEBIAN_MIRROR replaces
the Debian archive (a mirror of it).
"""
from __future__ import annotations

import getpass
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from runtimes.bundle import sha256_of
from runtimes.toolpaths import cache_root, toolchain_dir

from .base import Toolchain, ToolchainError, run_step

NAME = "arm-emulator"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
HOST_ARCHES = {"x86_64": "amd64"}
QEMU_PACKAGE, QEMU_FILE = "qemu-user-static", "usr/bin/qemu-aarch64-static"
# python3.11 and what it and onnxruntime's libraries load (readelf of the .so files, see the notes)
ROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libstdc++6",
                 "libgcc-s1", "libgomp1", "libssl3", "libexpat1", "zlib1g", "libffi8", "libbz2-1.0", "liblzma5",
                 "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libnsl2", "libtirpc3",
                 "libtirpc-common", "libcrypt1", "libdb5.3", "libgdbm6", "libgssapi-krb5-2", "libk5crypto3",
                 "libkrb5-3", "libkrb5support0", "libcom-err2", "libkeyutils1", "media-types")
PYTHON = "usr/bin/python3.11"
SITE = "usr/lib/python3/dist-packages"      # on the emulated interpreter's own path, even with -I
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
CHECK_CPU = "cortex-a72"

# CPU model -> (part number, kernel's Features line) as the Pi/Jetson kernels print them
CPUS = {
    "cortex-a53": ("0xd03", "fp asimd evtstrm crc32 cpuid"),                                   # Pi 3, Zero 2
    "cortex-a57": ("0xd07", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),               # Jetson Nano
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),                                   # Pi 4
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                            "asimdrdm lrcpc dcpop asimddp"),                                   # Pi 5
}
CORES = 4        # a Pi has four; onnxruntime only reads the count (we always set the threads)
PROBE = ("import json, platform, onnxruntime, numpy; print(json.dumps({'machine': platform.machine(), "
         "'python': platform.python_version(), 'onnxruntime': onnxruntime.__version__, "
         "'numpy': numpy.__version__}))")


def cpuinfo_text(cpu: str) -> str:
    part, features = CPUS[cpu]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
             f"CPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n")
    return "".join(f"processor\t: {n}\n{block}" for n in range(CORES))


def _mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 1)


class PrivateApt:
    """apt-get with its own sources, lists and cache: nothing of the system's apt state is read or written."""

    def __init__(self, folder: Path, mirror: str, arches: tuple[str, ...]):
        self.folder, self.mirror, self.arches = folder, mirror.rstrip("/"), arches
        self.lists, self.debs = folder / "lists", folder / "debs"
        self.reused = 0              # .debs taken from the download cache (same sha256 as the archive's)

    def options(self) -> list[str]:
        f = self.folder
        return ["-o", f"Dir::Etc::SourceList={f / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={f / 'parts'}",
                "-o", f"Dir::Etc::Preferences={f / 'preferences'}",
                "-o", f"Dir::Etc::PreferencesParts={f / 'parts'}", "-o", f"Dir::State::Lists={self.lists}",
                "-o", f"Dir::Cache={f / 'cache'}", "-o", "Dir::State::status=/dev/null",
                "-o", f"APT::Architecture={self.arches[0]}", "-o", f"APT::Architectures={','.join(self.arches)}",
                "-o", "Debug::NoLocking=1", "-o", "Acquire::Languages=none", "-o", "APT::Update::Error-Mode=any",
                "-o", f"APT::Sandbox::User={getpass.getuser()}"]

    def update(self) -> None:
        if not KEYRING.is_file():
            raise ToolchainError(f"{NAME}: Debian's archive keys ({KEYRING}) are missing; install the "
                                 "debian-archive-keyring package and run it again")
        for sub in ("lists/partial", "cache/archives/partial", "parts", "debs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        security = f"{self.mirror}-security"
        lines = [f"deb [signed-by={KEYRING}] {self.mirror} {SUITE} main",
                 f"deb [signed-by={KEYRING}] {self.mirror} {SUITE}-updates main",
                 f"deb [signed-by={KEYRING}] {security} {SUITE}-security main"]
        (self.folder / "sources.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
        run_step(["apt-get", *self.options(), "update"], f"fetching the Debian {SUITE} package lists", NAME,
                 timeout=600)
        if not any(self.lists.glob("*_Packages*")):
            raise ToolchainError(f"{NAME}: apt-get update fetched no package list from {self.mirror}; "
                                 "check the network/proxy and run it again")

    def fetch(self, packages: list[str]) -> list[Path]:
        """The .deb files of `packages` (candidate versions), downloading only those not cached already."""
        listing = run_step(["apt-get", *self.options(), "--print-uris", "download", *packages],
                           "resolving the Debian packages", NAME)
        wanted = []     # (file name, sha256) per package, from lines: 'URI' FILE SIZE SHA256:HEX
        for line in listing.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0].startswith("'") and parts[3].startswith("SHA256:"):
                wanted.append((parts[1], parts[3].split(":", 1)[1]))
        if len(wanted) != len(packages):
            raise ToolchainError(f"{NAME}: apt resolved {len(wanted)} of {len(packages)} packages "
                                 f"({', '.join(packages)}); is {self.mirror} a Debian {SUITE} archive?")
        missing = [pkg for pkg, (name, digest) in zip(packages, wanted)
                   if not (self.debs / name).is_file() or sha256_of(self.debs / name) != digest]
        if missing:
            run_step(["apt-get", *self.options(), "download", *missing], f"downloading {len(missing)} .deb files",
                     NAME, cwd=self.debs, timeout=900)
        self.reused += len(packages) - len(missing)
        return [self.debs / name for name, _ in wanted]


def unpack_debs(debs: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        run_step(["dpkg-deb", "-x", str(deb), str(dest)], f"unpacking {deb.name}", NAME)


class ArmEmulatorToolchain(Toolchain):
    name = NAME
    summary = "aarch64 CPython 3.11 + onnxruntime under qemu-aarch64 user emulation (checks ARM ONNX artifacts)"

    def __init__(self, progress: Callable[[str], None] = lambda message: None, mirror: str | None = None,
                 downloads: Path | None = None):
        super().__init__(progress)
        self.mirror = mirror or os.environ.get("EDGE_ARM_DEBIAN_MIRROR") or DEFAULT_MIRROR
        # absolute: apt reads a relative Dir:: path from /, and the emulated Python gets other cwds
        self.downloads = Path(downloads or cache_root() / "downloads" / NAME).absolute()

    # ---- install ----------------------------------------------------------------------------------
    def _build(self, staging: Path) -> dict:
        host = HOST_ARCHES.get(platform.machine())
        if host is None:
            raise ToolchainError(f"{NAME}: emulates aarch64 on an x86_64 host; this host is {platform.machine()}")
        apt = PrivateApt(self.downloads / "apt", self.mirror, ("arm64", host))
        self.progress(f"{NAME}: Debian {SUITE} package lists (arm64 + {host}) from {self.mirror}")
        apt.update()
        qemu_debs = apt.fetch([f"{QEMU_PACKAGE}:{host}"])
        self.progress(f"{NAME}: qemu-user-static ({_mb(qemu_debs[0])} MB .deb), keeping only qemu-aarch64-static")
        unpack_debs(qemu_debs, staging / "qemu-deb")
        shutil.move(str(staging / "qemu-deb" / QEMU_FILE), staging / "qemu-aarch64-static")
        shutil.rmtree(staging / "qemu-deb")
        debs = apt.fetch(list(ROOT_PACKAGES))
        self.progress(f"{NAME}: arm64 root from {len(debs)} .debs ({sum(_mb(d) for d in debs):.1f} MB; "
                      f"{apt.reused} of {len(debs) + 1} .debs were in the download cache)")
        unpack_debs(debs, staging / "root")
        wheels = self._wheels(staging / "root" / SITE)
        for cpu in CPUS:
            self._cpu_view(staging, cpu)
        self.progress(f"{NAME}: checking: import onnxruntime under emulation (-cpu {CHECK_CPU})")
        probe = self._probe(staging, CHECK_CPU)
        qemu = subprocess.run([str(staging / "qemu-aarch64-static"), "--version"], capture_output=True,
                              text=True).stdout.split("\n")[0]
        sizes = {"qemu_mb": _mb(staging / "qemu-aarch64-static"), "root_mb": _mb(staging / "root"),
                 "of_which_wheels_mb": _mb(staging / "root" / SITE)}
        return {"name": NAME, "qemu": qemu, "python": probe["python"], "onnxruntime": probe["onnxruntime"],
                "numpy": probe["numpy"], "debs": [d.name for d in qemu_debs + debs], "wheels": wheels,
                "sizes": sizes, "cpus": sorted(CPUS), "mirror": self.mirror,
                "summary": f"{qemu.split(' (')[0]}, aarch64 CPython {probe['python']}, onnxruntime "
                           f"{probe['onnxruntime']}, numpy {probe['numpy']} "
                           f"({sizes['qemu_mb'] + sizes['root_mb']:.0f} MB)"}

    def _wheels(self, site: Path) -> list[str]:
        """aarch64 wheels of the host's onnxruntime and numpy versions (and their deps) into `site`."""
        cache = self.downloads / "wheels"
        cache.mkdir(parents=True, exist_ok=True)
        pins = [f"onnxruntime=={importlib.metadata.version('onnxruntime')}",
                f"numpy=={importlib.metadata.version('numpy')}"]
        target = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                  *[arg for name in WHEEL_PLATFORMS for arg in ("--platform", name)]]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        self.progress(f"{NAME}: aarch64 wheels {' '.join(pins)} (+ their dependencies) with pip")
        # pip skips the wheels already in the cache folder; the install then reads that folder only
        run_step([*pip, "download", "-d", str(cache), *target, *pins], "downloading the aarch64 wheels", NAME)
        run_step([*pip, "install", "--no-index", "--find-links", str(cache), "--target", str(site), "--no-compile",
                  *target, *pins], "installing the aarch64 wheels", NAME)
        names = sorted(p.name.removesuffix(".dist-info") for p in site.glob("*.dist-info"))
        self.progress(f"{NAME}: {len(names)} wheels installed ({_mb(site)} MB): {', '.join(names)}")
        return names

    def _cpu_view(self, base: Path, cpu: str) -> None:
        """cpu/<model>/: the root's folders (relative symlinks, valid after the rename) + that core's cpuinfo."""
        view = base / "cpu" / cpu
        (view / "proc").mkdir(parents=True)
        for entry in sorted((base / "root").iterdir()):
            (view / entry.name).symlink_to(Path("..", "..", "root", entry.name))
        (view / "proc" / "cpuinfo").write_text(cpuinfo_text(cpu), encoding="ascii")

    # ---- use --------------------------------------------------------------------------------------
    def python_argv(self, cpu: str, base: Path | None = None) -> list[str]:
        """argv prefix that runs the emulated aarch64 python3.11 (isolated mode) on CPU model `cpu`."""
        if cpu not in CPUS:
            raise ToolchainError(f"{NAME}: no CPU model '{cpu}' (known: {', '.join(sorted(CPUS))})")
        base = (base or self.path).absolute()
        view = base / "cpu" / cpu
        return [str(base / "qemu-aarch64-static"), "-cpu", cpu, "-L", str(view), str(view / PYTHON), "-I"]

    def _probe(self, base: Path, cpu: str) -> dict:
        out = run_step([*self.python_argv(cpu, base), "-c", PROBE], "running the emulated Python", NAME,
                       timeout=300)
        return json.loads(out.strip().splitlines()[-1])

    def _check(self, root: Path, info: dict) -> str | None:
        try:
            probe = self._probe(root, CHECK_CPU)
        except (ToolchainError, ValueError, IndexError) as err:
            return f"the emulated Python does not start: {err}"
        if probe.get("machine") != "aarch64" or probe.get("onnxruntime") != info.get("onnxruntime"):
            return f"the emulated Python reports {probe}, expected aarch64 onnxruntime {info.get('onnxruntime')}"
        return None


def emulated_python(cpu: str) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, environment) that run a Python script on the installed emulated aarch64 CPU `cpu`
    ('cortex-a72' = Raspberry Pi 4, 'cortex-a76' = Pi 5). Does not install: says how to when missing."""
    chain = ArmEmulatorToolchain()
    if not (toolchain_dir(NAME) / "READY.json").is_file():
        raise ToolchainError(f"{NAME} is not installed; install it with: edge toolchain install {NAME}")
    # -I makes the interpreter ignore PYTHON* variables; qemu's own variables are set to the same choices
    # as its command line, so a QEMU_CPU/QEMU_LD_PREFIX left in the caller's environment cannot disagree
    return chain.python_argv(cpu), {"QEMU_CPU": cpu, "QEMU_LD_PREFIX": str(chain.path.absolute() / "cpu" / cpu)}


def ready_info() -> dict:
    try:
        return json.loads((toolchain_dir(NAME) / "READY.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ToolchainError(f"{NAME} is not installed; install it with: edge toolchain install {NAME}") from None
