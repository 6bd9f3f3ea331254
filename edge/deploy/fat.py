"""Files in a FAT partition inside an image file, through mtools (`IMAGE@@OFFSET`): no mount, no root."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .request import DeployError

MTOOLS_HINT = "mtools is needed to write into the image's FAT partition (Debian: apt install mtools)"


class FatPartition:
    def __init__(self, image: Path, offset: int):
        if shutil.which("mcopy") is None:
            raise DeployError(MTOOLS_HINT)
        self.image, self.drive = image, f"{image}@@{offset}"
        # no ~/.mtoolsrc surprises; a partition that is not a whole number of tracks is still fine
        self.env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull, "LC_ALL": "C"}

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([tool, "-i", self.drive, *args], capture_output=True, env=self.env)
        if check and proc.returncode != 0:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()
            reason = reason[-1] if reason else f"{tool} exited with {proc.returncode}"
            if "disk full" in reason.lower() or "no free clusters" in reason.lower():
                raise DeployError(f"{self.image}: the boot partition is full ({reason})")
            raise DeployError(f"{self.image}: {tool} failed on the boot partition: {reason}")
        return proc

    def exists(self, path: str) -> bool:
        return self._run("mdir", "-b", f"::{path}", check=False).returncode == 0

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        return self._run("mtype", f"::{path}").stdout.decode("utf-8")

    def free_bytes(self) -> int:
        listing = self._run("mdir", "::/").stdout.decode(errors="replace")
        match = re.search(r"([\d ,.]+)\s+bytes free", listing)
        if not match:
            raise DeployError(f"{self.image}: cannot read the boot partition's free space (mdir said: "
                              f"{listing.strip().splitlines()[-1:]})")
        return int(re.sub(r"\D", "", match.group(1)))

    def mkdir(self, path: str) -> None:
        if not self.exists(path):
            self._run("mmd", f"::{path}")

    def copy_in(self, source: Path, path: str) -> None:
        self._run("mcopy", "-o", "-n", str(source), f"::{path}")

    def write_text(self, path: str, text: str) -> None:
        with tempfile.TemporaryDirectory(prefix="edge-fat-") as folder:
            staged = Path(folder) / "file"
            staged.write_text(text, encoding="utf-8")
            self.copy_in(staged, path)
