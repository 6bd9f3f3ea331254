"""What `edge deploy --image` puts into the boot partition, and the installer the device runs once.

On the device the boot partition is mounted at /boot/firmware (Bookworm and later; /boot before:
`--boot-mount /boot`). Our files live in its `edge/` folder.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

FOLDER = "/edge"                         # in the FAT partition
VENV = "/opt/edge/venv"                  # Raspberry Pi OS forbids pip outside a venv (PEP 668)
DONE_MARK = "/var/lib/edge-firstboot.done"
SERVICE = "edge-firstboot.service"
LOG = "/var/log/edge-firstboot.log"


def on_device(boot_mount: str, name: str) -> str:
    """A file of our folder as the device sees it."""
    return f"{boot_mount.rstrip('/')}{FOLDER}/{name}"


@dataclass
class Layout:
    boot_mount: str                      # where the device mounts the FAT partition
    package_name: str                    # file name of the package inside FOLDER
    install_command: str                 # the `python -m edge deploy ... --rootfs /` line (see request.py)
    pip_spec: str

    def on_device(self, name: str) -> str:
        return on_device(self.boot_mount, name)

    def in_fat(self, name: str) -> str:
        return f"{FOLDER}/{name}"


def installer(layout: Layout) -> str:
    """firstboot.sh: venv, pip install, the package through edge's own installer, the service. Runs once."""
    q = shlex.quote
    return f"""#!/bin/bash
# Written by `edge deploy --image`: installs edge, the package and its service once, with the network up.
# Output goes to {LOG}. Delete {DONE_MARK} to run it again.
set -euo pipefail
[ -e {DONE_MARK} ] && exit 0
exec >>{LOG} 2>&1
echo "edge first boot: $(date)"
if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3-venv
fi
[ -x {VENV}/bin/python ] || python3 -m venv {VENV}
{VENV}/bin/pip install --upgrade {q(layout.pip_spec)}
{layout.install_command}
systemd-sysusers
systemctl daemon-reload
systemctl enable --now edge.service
touch {DONE_MARK}
systemctl disable {SERVICE} 2>/dev/null || true
echo "edge first boot: done"
"""


def oneshot_unit(layout: Layout) -> str:
    return f"""# Written by `edge deploy --image`: runs {layout.on_device('firstboot.sh')} once the network is up.
[Unit]
Description=edge: install the edge package (first boot)
Wants=network-online.target
After=network-online.target
ConditionPathExists=!{DONE_MARK}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash {layout.on_device('firstboot.sh')}

[Install]
WantedBy=multi-user.target
"""
