"""First boot the way Raspberry Pi Imager 1.x does it: `systemd.run=` in cmdline.txt.

The kernel command line makes systemd run our `firstrun.sh` once, early and without network, then
reboot. It installs and enables `edge-firstboot.service`, which runs the installer on the next boot
with the network up, and takes its own words back out of cmdline.txt. When cmdline.txt already runs
another script (Imager's customisation), that script gets one line calling ours, right after its
first line, and keeps its own clean-up.
"""
from __future__ import annotations

import re

from ..fat import FatPartition
from ..request import DeployError
from .layout import SERVICE, Layout, oneshot_unit

NAME = "firstrun"
CMDLINE = "/cmdline.txt"
RUN_ARGS = "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"


def applies(fat: FatPartition) -> bool:
    return fat.exists(CMDLINE)


def firstrun_script(layout: Layout) -> str:
    own = layout.on_device("firstrun.sh")
    cmdline = f"{layout.boot_mount.rstrip('/')}{CMDLINE}"
    unit = f"/etc/systemd/system/{SERVICE}"
    return f"""#!/bin/bash
# Written by `edge deploy --image`: run once by systemd.run= (or from Imager's firstrun.sh), before the
# network is up. It enables {SERVICE}, which installs edge on the next boot.
set +e
cp {layout.on_device(SERVICE)} {unit}
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf {unit} /etc/systemd/system/multi-user.target.wants/{SERVICE}
if grep -q ' systemd.run={own}' {cmdline}; then
    sed -i -e 's| systemd.run={own}||' -e 's| systemd.run_success_action=reboot||' \\
        -e 's| systemd.unit=kernel-command-line.target||' {cmdline}
fi
exit 0
"""


def _fat_path(device_path: str, layout: Layout) -> str:
    for mount in (layout.boot_mount.rstrip("/"), "/boot/firmware", "/boot"):
        if device_path.startswith(mount + "/"):
            return device_path[len(mount):]
    raise DeployError(f"cmdline.txt runs {device_path}, which is not in the boot partition; "
                      "add our hook yourself or use --firstboot cloud-init")


def _cmdline(fat: FatPartition) -> str:
    text = fat.read_text(CMDLINE)
    if text is None:
        raise DeployError(f"{fat.image}: no cmdline.txt in the boot partition; use --firstboot cloud-init")
    return text


def _running(cmdline: str) -> str | None:
    """The script cmdline.txt's first line already runs through systemd.run=, if any."""
    found = re.search(r"(?:^|\s)systemd\.run=(\S+)", cmdline.partition("\n")[0])
    return found.group(1) if found else None


def _chained_text(fat: FatPartition, script: str, layout: Layout) -> tuple[str, str]:
    path = _fat_path(script, layout)
    text = fat.read_text(path)
    if text is None:
        raise DeployError(f"{fat.image}: cmdline.txt runs {script}, which is not in the boot partition")
    return path, text


def check(fat: FatPartition, layout: Layout) -> None:
    """Before anything is written: there is a cmdline.txt, and a script it already runs is one we can reach."""
    script = _running(_cmdline(fat))
    if script and script != layout.on_device("firstrun.sh"):
        _chained_text(fat, script, layout)


def _chain(fat: FatPartition, script: str, layout: Layout) -> list[str]:
    path, text = _chained_text(fat, script, layout)
    call = f"bash {layout.on_device('firstrun.sh')}   # edge deploy"
    if call in text:
        return [f"{'unchanged':9} {fat.image}:{path} (already calls {layout.on_device('firstrun.sh')})"]
    first, _, rest = text.partition("\n")
    fat.write_text(path, f"{first}\n{call}\n{rest}")
    return [f"{'changed':9} {fat.image}:{path} (calls {layout.on_device('firstrun.sh')})"]


def hook(fat: FatPartition, layout: Layout) -> list[str]:
    fat.write_text(layout.in_fat(SERVICE), oneshot_unit(layout))
    fat.write_text(layout.in_fat("firstrun.sh"), firstrun_script(layout))
    lines = [f"{'wrote':9} {fat.image}:{layout.in_fat(name)}" for name in (SERVICE, "firstrun.sh")]
    text = _cmdline(fat)
    first, newline, rest = text.partition("\n")
    running, own = _running(text), layout.on_device("firstrun.sh")
    if running == own:
        return lines + [f"{'unchanged':9} {fat.image}:{CMDLINE} (already runs {own})"]
    if running:
        return lines + _chain(fat, running, layout)
    fat.write_text(CMDLINE, f"{first.rstrip()} systemd.run={own} {RUN_ARGS}{newline or chr(10)}{rest}")
    return lines + [f"{'changed':9} {fat.image}:{CMDLINE} (systemd.run={own})"]
