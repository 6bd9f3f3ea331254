"""The partition table of a disk image, read by `sfdisk --json` (util-linux): no parsing of our own."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .request import DeployError

# FAT partition types: MBR ids (FAT12/16/32, LBA variants, EFI system) and GPT type GUIDs (basic data, ESP)
FAT_MBR_TYPES = {"1", "4", "6", "b", "c", "e", "ef"}
FAT_GPT_TYPES = {"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}


@dataclass
class Partition:
    number: int
    start: int              # bytes from the start of the image
    size: int               # bytes
    type: str

    @property
    def is_fat(self) -> bool:
        return self.type.lower() in FAT_MBR_TYPES or self.type.upper() in FAT_GPT_TYPES


def read_table(image: Path) -> list[Partition]:
    if not image.is_file():
        raise DeployError(f"image {image} {'is not a file' if image.exists() else 'does not exist'}")
    sfdisk = shutil.which("sfdisk") or next((p for p in ("/usr/sbin/sfdisk", "/sbin/sfdisk") if Path(p).exists()),
                                            None)
    if sfdisk is None:
        raise DeployError("sfdisk is needed to read the image's partition table (Debian: apt install fdisk)")
    proc = subprocess.run([sfdisk, "--json", str(image)], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no partition table"
        raise DeployError(f"{image}: no partition table could be read ({reason}); is it a disk image?")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [Partition(number, int(p["start"]) * sector, int(p["size"]) * sector, str(p.get("type", "")))
            for number, p in enumerate(table.get("partitions", []), 1)]


def boot_partition(image: Path) -> Partition:
    """The first FAT partition: where Raspberry Pi OS keeps its firmware, cmdline.txt and first-boot files."""
    partitions = read_table(image)
    fat = [p for p in partitions if p.is_fat]
    if not fat:
        kinds = ", ".join(p.type for p in partitions) or "none"
        raise DeployError(f"{image}: no FAT boot partition (partition types: {kinds})")
    return fat[0]
