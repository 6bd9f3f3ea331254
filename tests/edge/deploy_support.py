"""Shared by the deploy tests: a real signed package (PP-HumanSeg-Lite converted to FP32 ONNX), a small real
disk image (MBR, FAT32 boot, ext4 root) built with the system's own tools, and a real sshd on 127.0.0.1."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.packaging import KeyPair, build_package, generate

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTOR = 512
BOOT_START, BOOT_SECTORS = 2048, 65536 * 2          # 64 MiB FAT32 (the smallest FAT32 mkfs.vfat makes easily)
ROOT_START, ROOT_SECTORS = BOOT_START + BOOT_SECTORS, 16384 * 2    # 16 MiB ext4


@dataclass
class Signed:
    package: Path
    operator: KeyPair
    stranger: KeyPair
    bundle: Path


_BUILT: dict[Path, Signed] = {}


def signed_package(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """Built once per test session and shared by the three deploy test files (a convert is ~5 s)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = _build_signed(shared_dir, tmp_path_factory.mktemp("deploy-package"))
    return _BUILT[base]


def _build_signed(shared_dir: Path, work: Path) -> Signed:
    from tests.edge.test_contract import convert_fp32

    bundle = convert_fp32(shared_dir, ["PP-HumanSeg-Lite/pp_humanseg_lite_portrait_398x224/model.onnx"],
                          work / "portrait")
    operator, stranger = generate("operator", work / "keys"), generate("stranger", work / "other-keys")
    package = work / "portrait.edgepkg"
    build_package(bundle, package, operator, name="portrait", version="1.0.0")
    return Signed(package, operator, stranger, bundle)


def tool(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None)
    if found is None:
        pytest.fail(f"{name} is not installed (apt install fdisk dosfstools mtools e2fsprogs openssh-server)",
                    pytrace=False)
    return found


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def build_image(path: Path, boot_files: dict[str, str], root_files: dict[str, str]) -> Path:
    """A sparse disk image: MBR, a FAT32 boot partition holding BOOT_FILES, an ext4 root made from ROOT_FILES."""
    with open(path, "wb") as fh:
        fh.truncate((ROOT_START + ROOT_SECTORS + 2048) * SECTOR)
    table = (f"label: dos\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c, bootable\n"
             f"start={ROOT_START}, size={ROOT_SECTORS}, type=83\n")
    run([tool("sfdisk"), "--quiet", str(path)], input=table)
    run([tool("mkfs.vfat"), "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START), str(path),
         str(BOOT_SECTORS * SECTOR // 1024)])
    tree = path.parent / f"{path.stem}-rootfs"
    for rel, text in root_files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    run([tool("mkfs.ext4"), "-q", "-F", "-L", "rootfs", "-E", f"offset={ROOT_START * SECTOR}", "-d", str(tree),
         str(path), f"{ROOT_SECTORS * SECTOR // 1024}k"])
    for rel, text in boot_files.items():
        source = path.parent / f"{path.stem}-{rel.replace('/', '_')}"
        source.write_text(text)
        run([tool("mcopy"), "-i", f"{path}@@{BOOT_START * SECTOR}", str(source), f"::/{rel}"],
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return path


def fat_drive(image: Path) -> str:
    return f"{image}@@{BOOT_START * SECTOR}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sshd:
    """A real OpenSSH server on 127.0.0.1: its own host key, key authentication only, this user's logins."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.user = folder, free_port(), getpass.getuser()
        folder.mkdir(parents=True, exist_ok=True)
        keygen = tool("ssh-keygen")
        self.host_key = folder / "host_ed25519"
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)])
        self.client_key = folder / "client_ed25519"
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)])
        self.wrong_key = folder / "wrong_ed25519"
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.wrong_key)])
        (folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {Path(f'{self.host_key}.pub').read_text()}")
        (folder / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# the test's folders sit under /tmp, which StrictModes would refuse (world-writable)
StrictModes no
UsePAM no
# the "device" runs edge from this checkout (the editable install may point at another one)
SetEnv PYTHONPATH={REPO_ROOT}
""")
        Path("/run/sshd").mkdir(exist_ok=True)          # privilege separation folder sshd requires
        self.proc = subprocess.Popen([tool("sshd"), "-D", "-e", "-f", str(folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "wb"))
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited: {(self.folder / 'sshd.log').read_text()[-1500:]}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("sshd did not start listening within 10 s", pytrace=False)

    def client_config(self, identity: Path) -> Path:
        """An ssh_config for the client: this server's host key pinned, one identity, no agent."""
        path = self.folder / f"ssh_config-{identity.name}"
        path.write_text(f"""\
Host 127.0.0.1
    IdentityFile {identity}
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {self.folder}/known_hosts
    StrictHostKeyChecking yes
""")
        return path

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def error(self) -> str:
        """The one error line the CLI printed (progress lines may precede it); no traceback."""
        assert self.returncode == 2, (self.returncode, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("edge deploy: error: ")]
        assert len(errors) == 1 and self.stderr.endswith(errors[0] + "\n"), self.stderr
        return errors[0]


def edge_cli(capsys: pytest.CaptureFixture, *argv: str) -> CliResult:
    """`edge` through its real entry point (parser, handler, one-line errors), in this process."""
    from edge.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)
