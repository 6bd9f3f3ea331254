"""The A/B slots of one bundle on a device: `<bundles_dir>/<name>/<version>/` folders and two links.

    bundles/seg/1.0/            the standby slot (`previous` points here): what a rollback returns to
    bundles/seg/1.1/            the active slot (`current` points here): what the pipelines run
    bundles/seg/current -> 1.1
    bundles/seg/previous -> 1.0

This is the layout `edge deploy` writes (a version folder and `current`), so a deployed device takes
updates as it is. A link changes by renaming a new link over it (rename(2) is atomic), and the folder is
synced after, so after a power cut `current` names either the old or the new version, never neither.
An update overwrites the standby slot only: the active one is never touched until the switch.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from runtimes.errors import EdgeError

from ..packaging import PackageManifest, install_package
from ..packaging.install import TrustedKeys

log = logging.getLogger("edge.ota")

ACTIVE, STANDBY = "current", "previous"


class SlotError(EdgeError):
    """The bundles folder is not in the shape an update needs."""


def sync_dir(folder: Path) -> None:
    """fsync a folder: a rename inside it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Slots:
    def __init__(self, bundles_dir: Path, name: str):
        self.root = Path(bundles_dir) / name
        self.name = name

    def _target(self, link: str) -> str | None:
        path = self.root / link
        if not path.is_symlink():
            return None
        target = os.readlink(path)
        return target if "/" not in target and (self.root / target).is_dir() else None

    @property
    def active(self) -> str | None:
        """The version `current` points to (None: no usable link)."""
        return self._target(ACTIVE)

    @property
    def standby(self) -> str | None:
        return self._target(STANDBY)

    @property
    def link(self) -> Path:
        """What the pipelines open: the `current` link itself, so a switch needs no config change."""
        return self.root / ACTIVE

    def describe(self) -> dict[str, str | None]:
        return {"active": self.active, "standby": self.standby}

    def _set(self, link: str, version: str | None) -> None:
        path = self.root / link
        if version is None:
            path.unlink(missing_ok=True)
        else:
            if not (self.root / version).is_dir():
                raise SlotError(f"{self.root}: no version folder '{version}' to point '{link}' at")
            tmp = self.root / f".{link}.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(version, tmp)          # relative: the folder can be mounted anywhere (an SD card)
            os.replace(tmp, path)
        sync_dir(self.root)

    def clear_standby(self) -> None:
        """Make room in the standby slot for a new version (the active one stays)."""
        standby, active = self.standby, self.active
        self._set(STANDBY, None)
        if standby and standby != active:
            log.info("removing %s/%s to make room for the update", self.name, standby)
            shutil.rmtree(self.root / standby, ignore_errors=True)

    def install(self, pkg: Path, manifest: PackageManifest, trusted: TrustedKeys) -> Path:
        """Verify and unpack into `<name>/<version>` (install_package refuses anything it cannot trust)."""
        if manifest.name != self.name:
            raise SlotError(f"package is bundle '{manifest.name}', this slot holds '{self.name}'")
        return install_package(pkg, self.root.parent, trusted)

    def switch(self, new: str, old: str | None) -> None:
        """`previous` -> old, then `current` -> new (each an atomic rename)."""
        if old is not None and old != new:
            self._set(STANDBY, old)
        self._set(ACTIVE, new)

    def restore(self, old: str, standby: str | None) -> None:
        """The rollback: `current` back to `old`, `previous` to what it was before the update."""
        self._set(ACTIVE, old)
        self._set(STANDBY, standby if standby and standby != old and (self.root / standby).is_dir() else None)

    def prune(self) -> list[str]:
        """Remove version folders neither link names, and leftover staging folders: at most two stay."""
        keep = {self.active, self.standby}
        removed = []
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if entry.is_symlink() or not entry.is_dir() or entry.name in keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        return removed
