"""`edge deploy PKG --image FILE.img`: an unmounted disk image, no root, no loop devices.

The partition table is read with `sfdisk --json`; the FAT boot partition is written with mtools at its
byte offset. Into its `edge/` folder go the package, the trusted public key and `firstboot.sh` (the
installer: a venv with `pp-edge[device]`, then the package through edge's own `deploy --rootfs /` on the
device, then the service). The first-boot hook (`firstboot/`: cloud-init or Imager-style firstrun) is
written last, so an image whose copy failed half-way never runs a half-copied set. The root partition
is not touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .fat import FatPartition
from .firstboot import AUTO, HOOKS, choose
from .firstboot.layout import FOLDER, VENV, Layout, installer, on_device
from .partitions import boot_partition
from .request import DeployError, DeployRequest, Say, verify_for_target

FLAG = "--image"
TRUSTED_NAME = "trusted.pub"
SLACK = 256 << 10                       # the scripts, the key, and the hook files


@dataclass
class Options:
    image: Path
    firstboot: str = AUTO
    boot_mount: str = "/boot/firmware"
    pip_spec: str = "pp-edge[device]"


def add_arguments(group) -> None:
    group.add_argument("--firstboot", default=AUTO, choices=[AUTO, *HOOKS],
                       help="first-boot mechanism (default auto: cloud-init if the image has user-data)")
    group.add_argument("--boot-mount", default="/boot/firmware",
                       help="where the device mounts the boot partition (default /boot/firmware; /boot before "
                            "Bookworm)")
    group.add_argument("--pip-spec", default="pp-edge[device]",
                       help="what the device pip-installs at first boot (default pp-edge[device]; a URL or a "
                            "pinned version works)")


def options_from_args(args) -> Options:
    return Options(image=Path(args.image), firstboot=args.firstboot, boot_mount=args.boot_mount,
                   pip_spec=args.pip_spec)


def deploy(request: DeployRequest, options: Options, say: Say) -> list[str]:
    if not options.boot_mount.startswith("/"):
        raise DeployError(f"--boot-mount must be an absolute path on the device, got {options.boot_mount!r}")
    if request.python is not None:
        raise DeployError("--python does not apply to --image: the device runs edge from its own venv")
    verified = verify_for_target(request)
    manifest = verified.manifest
    say(f"verified {request.package.name}: {manifest.name} {manifest.version}, signed by trusted key "
        f"{verified.key_id}")
    partition = boot_partition(options.image)
    say(f"boot partition: #{partition.number} at byte {partition.start} ({partition.size / 1e6:.0f} MB, "
        f"type {partition.type})")
    fat = FatPartition(options.image, partition.start)
    hook = choose(fat, options.firstboot)
    package_name = f"{manifest.name}-{manifest.version}.edgepkg"
    needed = request.package.stat().st_size + SLACK
    free = fat.free_bytes()
    if free < needed:
        raise DeployError(f"{options.image}: the boot partition has {free / 1e6:.1f} MB free and the package needs "
                          f"{needed / 1e6:.1f} MB; nothing was written")
    command = request.device_command(f"{VENV}/bin/python", on_device(options.boot_mount, package_name),
                                     on_device(options.boot_mount, TRUSTED_NAME))
    layout = Layout(boot_mount=options.boot_mount, package_name=package_name, pip_spec=options.pip_spec,
                    install_command=command)
    hook.check(fat, layout)
    say(f"writing the package ({request.package.stat().st_size / 1e6:.1f} MB) and the installer; first boot "
        f"through {hook.NAME}")
    fat.mkdir(FOLDER)
    fat.copy_in(request.package, layout.in_fat(package_name))
    fat.copy_in(request.trusted_key, layout.in_fat(TRUSTED_NAME))
    fat.write_text(layout.in_fat("firstboot.sh"), installer(layout))
    lines = [f"{'wrote':9} {options.image}:{layout.in_fat(name)}"
             for name in (package_name, TRUSTED_NAME, "firstboot.sh")]
    return lines + hook.hook(fat, layout)
