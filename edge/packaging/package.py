"""The `.edgepkg` file: one bundle, carried safely from the laptop to a device.

A gzip'd tar whose first member is `edgepkg.json` and whose other members are the bundle's files under
`bundle/`. The manifest lists every file with its size and sha256 and carries an ed25519 signature over
its own canonical JSON (every field but the signature, keys sorted, no spaces, after a fixed context
string), so the signature covers the hash of every file: a device checks the signature against its
trusted keys, then each file against its hash, before anything is unpacked (`install.py`).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtimes.bundle import Bundle, sha256_of
from runtimes.errors import EdgeError

from .keys import KeyPair

FORMAT = "edgepkg/1"
MANIFEST_MEMBER = "edgepkg.json"
BUNDLE_PREFIX = "bundle/"
SIGNING_CONTEXT = b"edgepkg/1 signed manifest\n"     # a signature made for anything else never verifies here
# name and version become folder names on the device (/opt/edge/bundles/<name>/<version>)
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class PackageError(EdgeError):
    """A package cannot be written, or is refused (unsigned, untrusted, tampered, truncated, unsafe)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackageFile(Strict):
    path: str                       # relative to the bundle folder
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Signature(Strict):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    value: str                      # base64 of the 64 signature bytes


class PackageManifest(Strict):
    format: Literal["edgepkg/1"] = FORMAT
    name: str = Field(pattern=SAFE_NAME)
    version: str = Field(pattern=SAFE_NAME)
    created: str
    pipeline: str
    task: str
    files: list[PackageFile]
    signature: Signature | None = None

    def signed_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"signature"})
        return SIGNING_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode("utf-8")

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def content_version(files: list[PackageFile]) -> str:
    """The default version: a digest of every path and hash, so the same bundle always gets the same one."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda f: f.path):
        digest.update(f"{entry.path}\0{entry.sha256}\n".encode())
    return digest.hexdigest()[:12]


def _bundle_files(root: Path) -> list[PackageFile]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise PackageError(f"{root}: '{rel}' is a link; a package carries regular files only")
        if path.is_file():
            files.append(PackageFile(path=rel, bytes=path.stat().st_size, sha256=sha256_of(path)))
    return files


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing it, so a file changed after it was listed is caught while it is packed."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.digest = fh, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        block = self.fh.read(size)
        self.digest.update(block)
        return block


def build_package(bundle_dir: Path, out: Path, key: KeyPair | None, name: str | None = None,
                  version: str | None = None) -> PackageManifest:
    """Write `out` from the bundle folder, signed with `key` (None writes an unsigned package, which every
    device refuses: only for tests of that refusal). The bundle is verified first."""
    bundle = Bundle.open(bundle_dir, verify=True)
    files = _bundle_files(bundle.root)
    manifest = PackageManifest(name=name or bundle.manifest.pipeline, version=version or content_version(files),
                               created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               pipeline=bundle.manifest.pipeline, task=bundle.manifest.task, files=files)
    if key is not None:
        value = base64.b64encode(key.private.sign(manifest.signed_bytes())).decode()
        manifest.signature = Signature(key_id=key.id, value=value)
    write_package(out, manifest, bundle.root)
    return manifest


def write_package(out: Path, manifest: PackageManifest, root: Path) -> None:
    """The archive itself: the manifest first, then each listed file from `root`; written beside `out` and
    renamed into place, so a half-written package never carries the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    now = time.time()
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            text = manifest.model_dump_json(indent=1).encode("utf-8")
            tar.addfile(_tar_info(MANIFEST_MEMBER, len(text), now), io.BytesIO(text))
            for entry in manifest.files:
                with open(root / entry.path, "rb") as fh:
                    reader = _HashingReader(fh)
                    tar.addfile(_tar_info(BUNDLE_PREFIX + entry.path, entry.bytes, now), reader)
                if reader.digest.hexdigest() != entry.sha256:
                    raise PackageError(f"{root / entry.path} changed while it was being packed; run it again")
        os.replace(tmp, out)
    except OSError as err:
        raise PackageError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
