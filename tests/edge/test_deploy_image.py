"""`edge deploy PKG --image FILE.img` into a small real disk image built here (sfdisk: MBR; mkfs.vfat: FAT32 boot;
mkfs.ext4 -d: the root), without root or loop devices, read back with independent tools: sfdisk, mdir/mtype/mcopy
and debugfs. The first-boot installer's own deploy line is then run against a folder, with what the image holds."""
from __future__ import annotations

import configparser
import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.packaging import build_package, verify_package
from runtimes.bundle import Bundle

from .deploy_support import (ROOT_SECTORS, ROOT_START, SECTOR, build_image, edge_cli, fat_drive, run,
                             signed_package, tool)

CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
HOOK = "systemd.run=/boot/firmware/edge/firstrun.sh systemd.run_success_action=reboot " \
       "systemd.unit=kernel-command-line.target"
ROOT_FILES = {"etc/hostname": "raspberrypi\n", "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'}
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@pytest.fixture(scope="module")
def signed(shared_dir, tmp_path_factory):
    return signed_package(shared_dir, tmp_path_factory)


def mtype(image: Path, path: str) -> str:
    return run([tool("mtype"), "-i", fat_drive(image), f"::{path}"], env=MTOOLS_ENV).stdout


def mdir(image: Path, path: str) -> list[str]:
    return sorted(run([tool("mdir"), "-b", "-i", fat_drive(image), f"::{path}"], env=MTOOLS_ENV).stdout.split())


def mcopy_out(image: Path, path: str, dest: Path) -> Path:
    run([tool("mcopy"), "-n", "-i", fat_drive(image), f"::{path}", str(dest)], env=MTOOLS_ENV)
    return dest


def partition_table(image: Path) -> str:
    return run([tool("sfdisk"), "--dump", str(image)]).stdout


def root_partition_digest(image: Path) -> str:
    with open(image, "rb") as fh:
        fh.seek(ROOT_START * SECTOR)
        return hashlib.sha256(fh.read(ROOT_SECTORS * SECTOR)).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def deploy(capsys, signed):
    def run_deploy(image: Path, *extra: str, package: Path | None = None):
        return edge_cli(capsys, "deploy", str(package or signed.package), "--image", str(image),
                        "--trusted", str(signed.operator.public_path), *extra)
    return run_deploy


def test_firstrun_image_gets_package_key_installer_and_cmdline_hook(signed, deploy, tmp_path):
    image = build_image(tmp_path / "rpi.img", {"cmdline.txt": CMDLINE, "config.txt": "arm_64bit=1\n"}, ROOT_FILES)
    table, root_digest = partition_table(image), root_partition_digest(image)

    done = deploy(image, "--mqtt", "mqtt://broker.lan:1883")
    assert done.returncode == 0, done.stderr
    assert mdir(image, "/edge") == sorted(f"::/edge/{n}" for n in (
        "portrait-1.0.0.edgepkg", "trusted.pub", "firstboot.sh", "firstrun.sh", "edge-firstboot.service"))
    assert mtype(image, "/cmdline.txt") == CMDLINE.rstrip("\n") + " " + HOOK + "\n"    # one line, appended
    assert partition_table(image) == table and root_partition_digest(image) == root_digest   # root untouched
    debugfs = run([tool("debugfs"), "-R", "cat /etc/hostname", f"{image}?offset={ROOT_START * SECTOR}"])
    assert debugfs.stdout == "raspberrypi\n"

    package = mcopy_out(image, "/edge/portrait-1.0.0.edgepkg", tmp_path / "from-image.edgepkg")
    key = mcopy_out(image, "/edge/trusted.pub", tmp_path / "from-image.pub")
    assert sha256(package) == sha256(signed.package)
    assert verify_package(package, [key]).key_id == signed.operator.id

    for script in ("/edge/firstboot.sh", "/edge/firstrun.sh"):
        syntax = subprocess.run(["bash", "-n"], input=mtype(image, script), capture_output=True, text=True)
        assert syntax.returncode == 0, f"{script}: {syntax.stderr}"
    unit = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    unit.optionxform = str
    unit.read_string(mtype(image, "/edge/edge-firstboot.service"))
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Service"]["ExecStart"] == "/bin/bash /boot/firmware/edge/firstboot.sh"
    assert "edge-firstboot.service" in mtype(image, "/edge/firstrun.sh")

    again = deploy(image, "--mqtt", "mqtt://broker.lan:1883")                  # deploying twice: one hook
    assert again.returncode == 0, again.stderr
    assert mtype(image, "/cmdline.txt").count("systemd.run=") == 1


def test_the_installers_own_deploy_line_installs_what_the_image_carries(signed, deploy, tmp_path, capsys):
    """The line firstboot.sh runs on the device, run here with the device paths mapped to files read back."""
    image = build_image(tmp_path / "rpi.img", {"cmdline.txt": CMDLINE}, ROOT_FILES)
    assert deploy(image, "--device-id", "cam-9", "--source", "/dev/video0").returncode == 0
    boot = tmp_path / "boot"
    boot.mkdir()
    lines = [line for line in mtype(image, "/edge/firstboot.sh").splitlines() if " -m edge deploy " in line]
    assert len(lines) == 1
    argv = shlex.split(lines[0])
    assert argv[:4] == ["/opt/edge/venv/bin/python", "-m", "edge", "deploy"]
    assert argv[argv.index("--rootfs") + 1] == "/"
    assert argv[argv.index("--device-id") + 1] == "cam-9" and argv[argv.index("--source") + 1] == "/dev/video0"
    for name in ("portrait-1.0.0.edgepkg", "trusted.pub"):
        mcopy_out(image, f"/edge/{name}", boot / name)
    device_root = tmp_path / "device-root"
    device_root.mkdir()
    mapped = [str(boot / Path(a).name) if a.startswith("/boot/firmware/edge/") else a for a in argv[4:]]
    mapped[mapped.index("--rootfs") + 1] = str(device_root)
    installed = edge_cli(capsys, "deploy", *mapped, "--python", sys.executable)
    assert installed.returncode == 0, installed.stderr
    assert Bundle.open(device_root / "opt/edge/bundles/portrait/current", verify=True)
    config = yaml.safe_load((device_root / "etc/edge/config.yaml").read_text())
    assert config["device_id"] == "cam-9" and config["pipelines"][0]["source"] == "/dev/video0"


def test_cloud_init_image_gets_a_runcmd_entry_and_keeps_its_user_data(signed, deploy, tmp_path):
    user_data = "#cloud-config\n# written by the imager\nhostname: cam-7\n"
    image = build_image(tmp_path / "trixie.img", {"cmdline.txt": CMDLINE, "user-data": user_data,
                                                  "meta-data": "instance-id: cam-7\n"}, ROOT_FILES)
    done = deploy(image)
    assert done.returncode == 0, done.stderr
    written = mtype(image, "/user-data")
    assert written.startswith(user_data)                                  # comments and keys kept as they were
    parsed = yaml.safe_load(written)
    assert parsed["hostname"] == "cam-7"
    assert parsed["runcmd"] == [["bash", "/boot/firmware/edge/firstboot.sh"]]
    assert mtype(image, "/cmdline.txt") == CMDLINE                        # cloud-init needs no kernel argument
    assert deploy(image).returncode == 0
    assert yaml.safe_load(mtype(image, "/user-data"))["runcmd"] == [["bash", "/boot/firmware/edge/firstboot.sh"]]


def test_an_imager_firstrun_script_calls_ours_and_keeps_its_own(signed, deploy, tmp_path):
    imager = "#!/bin/bash\n\nset +e\necho imager-things\nrm -f /boot/firstrun.sh\nexit 0\n"
    cmdline = CMDLINE.rstrip("\n") + " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot " \
                                     "systemd.unit=kernel-command-line.target\n"
    image = build_image(tmp_path / "imager.img", {"cmdline.txt": cmdline, "firstrun.sh": imager}, ROOT_FILES)
    assert deploy(image, "--firstboot", "firstrun").returncode == 0
    assert mtype(image, "/cmdline.txt") == cmdline
    lines = mtype(image, "/firstrun.sh").splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1].startswith("bash /boot/firmware/edge/firstrun.sh")
    assert "\n".join(lines[2:]) + "\n" == imager.partition("\n")[2]


def test_refusals_are_one_line_and_leave_the_image_as_it_was(signed, deploy, tmp_path):
    image = build_image(tmp_path / "rpi.img", {"cmdline.txt": CMDLINE}, ROOT_FILES)
    before = sha256(image)
    foreign = tmp_path / "foreign.edgepkg"
    build_package(signed.bundle, foreign, signed.stranger, name="portrait", version="6.6.6")
    assert "does not trust" in deploy(image, package=foreign).error()

    filler = tmp_path / "filler.bin"                        # leave less room than the package needs
    free = int(run([tool("mdir"), "-i", fat_drive(image), "::/"], env=MTOOLS_ENV).stdout
               .split("bytes free")[0].splitlines()[-1].replace(" ", ""))
    filler.write_bytes(b"\0" * (free - 400_000))
    run([tool("mcopy"), "-i", fat_drive(image), str(filler), "::/filler.bin"], env=MTOOLS_ENV)
    full = sha256(image)
    assert re.search(r"the boot partition has 0\.[34] MB free and the package needs 1\.\d MB; nothing was written",
                     deploy(image).error())
    assert sha256(image) == full and "::/edge" not in mdir(image, "/")
    assert before != full

    scripted = build_image(tmp_path / "scripted.img", {"user-data": "#!/bin/sh\necho mine\n"}, ROOT_FILES)
    untouched = sha256(scripted)
    assert "is not a #cloud-config file" in deploy(scripted).error()
    assert sha256(scripted) == untouched

    not_an_image = tmp_path / "photo.img"
    not_an_image.write_bytes(b"\xff" * (1 << 20))
    assert "no partition table" in deploy(not_an_image).error()
    assert "does not exist" in deploy(tmp_path / "missing.img").error()
