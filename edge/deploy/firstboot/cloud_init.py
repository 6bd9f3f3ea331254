"""First boot through cloud-init: a `runcmd` entry in the boot partition's `user-data`.

cloud-init runs `runcmd` once per instance, late in boot (cloud-final) with the network up, so it runs
the installer directly. A user-data without `runcmd` gets the key appended as text, keeping the file's
comments; one with a `runcmd` list gets the entry added to it (the file is then rewritten as YAML).
"""
from __future__ import annotations

import yaml

from ..fat import FatPartition
from ..request import DeployError
from .layout import Layout

NAME = "cloud-init"
USER_DATA = "/user-data"
HEADER = "#cloud-config"


def applies(fat: FatPartition) -> bool:
    return fat.exists(USER_DATA)


def _entry(layout: Layout) -> list[str]:
    return ["bash", layout.on_device("firstboot.sh")]


def _read(fat: FatPartition) -> tuple[str, dict]:
    """The user-data text and its mapping ("" and {} when there is none); refuses what we cannot extend."""
    text = fat.read_text(USER_DATA) or ""
    if not text.strip():
        return "", {}
    where = f"{fat.image}:{USER_DATA}"
    if not text.lstrip().startswith(HEADER):
        raise DeployError(f"{where} is not a #cloud-config file (a script or MIME user-data); add a runcmd "
                          "entry running firstboot.sh yourself, or use --firstboot firstrun")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise DeployError(f"{where} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runcmd", []), list):
        raise DeployError(f"{where}: expected a mapping whose runcmd is a list")
    return text, data


def check(fat: FatPartition, layout: Layout) -> None:
    """Before anything is written: the user-data, if any, is one we can add to."""
    _read(fat)


def hook(fat: FatPartition, layout: Layout) -> list[str]:
    text, data = _read(fat)
    entry = _entry(layout)
    if not text:
        fat.write_text(USER_DATA, f"{HEADER}\n" + yaml.safe_dump({"runcmd": [entry]}, sort_keys=False))
        return [f"{'wrote':9} {fat.image}:{USER_DATA} (runcmd: {' '.join(entry)})"]
    runcmd = data.get("runcmd")
    if runcmd and entry in runcmd:
        return [f"{'unchanged':9} {fat.image}:{USER_DATA} (runcmd already runs {entry[1]})"]
    if runcmd is None:
        new = text + ("" if text.endswith("\n") else "\n") + yaml.safe_dump({"runcmd": [entry]}, sort_keys=False)
    else:
        data["runcmd"] = runcmd + [entry]
        new = f"{HEADER}\n" + yaml.safe_dump(data, sort_keys=False)
    fat.write_text(USER_DATA, new)
    return [f"{'changed':9} {fat.image}:{USER_DATA} (runcmd: {' '.join(entry)})"]
