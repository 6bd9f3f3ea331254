"""What every deploy target gets: the package, the key the device is to trust, and the daemon settings.

The package is verified here against that key before any target writes anything, so a package the
device would refuse never leaves the laptop.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtimes.errors import EdgeError

from ..packaging.install import VerifiedPackage, verify_package
from ..packaging.keys import KeyFileError, keys_dir, load_trusted

Say = Callable[[str], None]         # progress: one line per step


class DeployError(EdgeError):
    """A deploy cannot be done as asked (target unreachable, full, not what it should be)."""


@dataclass
class DeployRequest:
    package: Path
    trusted_key: Path               # one .pub file: the key the device will trust for this and later packages
    device_id: str | None = None    # daemon config; None: the target's hostname
    mqtt: str | None = None
    source: str | None = None
    python: str | None = None       # the python the service runs on the target
    force: bool = False             # replace a different existing daemon config or unit

    @property
    def sets_config(self) -> bool:
        return any(v is not None for v in (self.device_id, self.mqtt, self.source))

    def device_flags(self) -> list[str]:
        """These settings as the flags of `edge deploy --rootfs`, for the install the device runs itself."""
        flags = []
        for flag, value in (("--device-id", self.device_id), ("--mqtt", self.mqtt), ("--source", self.source),
                            ("--python", self.python)):
            if value is not None:
                flags += [flag, value]
        return flags + (["--force"] if self.force else [])

    def device_command(self, python: str, package: str, key: str, root: str = "/") -> str:
        """The shell command that installs the package on the device with the device's own edge."""
        argv = [python, "-m", "edge", "deploy", package, "--rootfs", root, "--trusted", key, *self.device_flags()]
        return shlex.join(argv)


def default_trusted_key() -> Path:
    """The operator's own public key (`edge keys generate` made it)."""
    return keys_dir() / "default.pub"


def trusted_key_id(request: DeployRequest) -> str:
    """The id of the one key the target will trust; a one-line error when the file is missing or empty."""
    key = request.trusted_key
    if not key.is_file():
        hint = " (create it with: edge keys generate)" if key == default_trusted_key() else ""
        raise KeyFileError(f"no trusted public key at {key}{hint}; name one with --trusted KEY.pub")
    keys = load_trusted([key])
    if len(keys) != 1:
        raise KeyFileError(f"{key}: holds {len(keys)} public keys; --trusted takes a file with exactly one")
    return next(iter(keys))


def verify_for_target(request: DeployRequest) -> VerifiedPackage:
    """The package checked against the one key the target will trust; raises a one-line error otherwise."""
    trusted_key_id(request)
    return verify_package(request.package, [request.trusted_key])
