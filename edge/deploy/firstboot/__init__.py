"""How a Raspberry Pi OS image is told to run our installer at first boot: one mechanism per module.

- `cloud-init`: the image has a `user-data` file in its boot partition (Raspberry Pi OS from Trixie on,
  and what Raspberry Pi Imager 2 writes): a `runcmd` entry runs the installer once, after the network is up.
- `firstrun`: older images (Bookworm and before), the way Raspberry Pi Imager 1.x does it: `cmdline.txt`
  gets `systemd.run=<boot>/edge/firstrun.sh`, which installs a one-shot service that runs the installer
  once the network is up on the next boot; if Imager's own `firstrun.sh` is already hooked there, ours is
  called from it instead.
Each module offers `NAME`, `applies(fat) -> bool`, `check(fat, layout)` (raises, before anything is
written, when it cannot hook this image) and `hook(fat, layout) -> report lines`.
"""
from __future__ import annotations

from ..fat import FatPartition
from ..request import DeployError
from . import cloud_init, firstrun

HOOKS = {cloud_init.NAME: cloud_init, firstrun.NAME: firstrun}
AUTO = "auto"


def choose(fat: FatPartition, wanted: str):
    if wanted != AUTO:
        if wanted not in HOOKS:
            raise DeployError(f"--firstboot {wanted}: one of {AUTO}, {', '.join(HOOKS)}")
        return HOOKS[wanted]
    for hook in HOOKS.values():         # cloud-init first: an image that has it uses it
        if hook.applies(fat):
            return hook
    raise DeployError(f"{fat.image}: its boot partition has neither user-data (cloud-init) nor cmdline.txt "
                      "(Raspberry Pi firstrun); not a Raspberry Pi OS image? choose one with --firstboot")
