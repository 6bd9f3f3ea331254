"""Checking and installing an `.edgepkg` on a device.

Order, so that a bad package changes nothing:
1. read `edgepkg.json` (the first member, size-limited) and check its signature against the trusted keys;
2. read the whole archive once more without writing anything: every member must be a regular file under
   `bundle/`, listed in the signed manifest with its size and sha256, inside the file-count and size
   limits, and every listed file must be there;
3. only then unpack into a staging folder beside the destination, hashing again while writing (the file
   could have changed since step 2), check the bundle's own manifest, and rename the staging folder into
   `<dest_root>/<name>/<version>` in one step. Any failure removes the staging folder.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from runtimes.bundle import Bundle, sha256_of
from runtimes.errors import BundleError

from .keys import load_trusted
from .package import BUNDLE_PREFIX, MANIFEST_MEMBER, PackageError, PackageManifest
from .safe_extract import ARCHIVE_ERRORS, Budget, Limits, UnsafeArchive, copy_bounded, safe_name

MAX_MANIFEST_BYTES = 16 << 20
TrustedKeys = Union[Mapping[str, Ed25519PublicKey], Path, Iterable[Path]]


@dataclass
class VerifiedPackage:
    path: Path
    manifest: PackageManifest
    key_id: str


def _trusted(keys: TrustedKeys) -> Mapping[str, Ed25519PublicKey]:
    if isinstance(keys, Mapping):
        return keys
    return load_trusted([keys] if isinstance(keys, (str, Path)) else list(keys))


def _open(pkg: Path) -> tarfile.TarFile:
    if not pkg.is_file():
        raise PackageError(f"{pkg}: no such package file")
    try:
        return tarfile.open(pkg, "r:gz")
    except ARCHIVE_ERRORS + (OSError,) as err:
        raise PackageError(f"{pkg}: not an edge package, or truncated ({err})") from None


def _read_manifest(tar: tarfile.TarFile, pkg: Path) -> PackageManifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_MEMBER or not first.isreg():
        raise PackageError(f"{pkg}: not an edge package (its first member is not {MANIFEST_MEMBER})")
    if first.size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{pkg}: {MANIFEST_MEMBER} is {first.size} bytes; refused (limit {MAX_MANIFEST_BYTES})")
    try:
        raw = json.loads(tar.extractfile(first).read().decode("utf-8"))
        return PackageManifest.model_validate(raw)
    except ValidationError as err:
        where = ".".join(str(p) for p in err.errors()[0]["loc"])
        raise PackageError(f"{pkg}: {MANIFEST_MEMBER}: {where}: {err.errors()[0]['msg']}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise PackageError(f"{pkg}: {MANIFEST_MEMBER} is not valid JSON ({err})") from None


def _check_signature(manifest: PackageManifest, trusted: Mapping[str, Ed25519PublicKey], pkg: Path) -> str:
    sig = manifest.signature
    if sig is None:
        raise PackageError(f"{pkg}: unsigned package; refused (sign it with: edge package BUNDLE --key KEY)")
    public = trusted.get(sig.key_id)
    if public is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise PackageError(f"{pkg}: signed by key {sig.key_id}, which this device does not trust "
                           f"(trusted: {known}); refused")
    try:
        public.verify(base64.b64decode(sig.value, validate=True), manifest.signed_bytes())
    except (InvalidSignature, ValueError):
        raise PackageError(f"{pkg}: the signature of key {sig.key_id} does not match the manifest "
                           "(tampered, or signed by another key); refused") from None
    return sig.key_id


def _check_listing(manifest: PackageManifest, limits: Limits, pkg: Path) -> dict:
    budget = Budget(limits, pkg.name)
    listed = {}
    for entry in manifest.files:
        rel = safe_name(entry.path, pkg.name).as_posix()
        if rel in listed:
            raise PackageError(f"{pkg}: '{rel}' is listed twice; refused")
        budget.add(entry.bytes)
        listed[rel] = entry
    return listed


def _members(tar: tarfile.TarFile, listed: dict, pkg: Path):
    """Each bundle member with its manifest entry, refusing anything unlisted, special, repeated or resized."""
    seen = set()
    for info in tar:                # iteration starts again at the first member: the manifest, checked already
        if info.offset == 0 and info.name == MANIFEST_MEMBER:
            continue
        if not info.name.startswith(BUNDLE_PREFIX):
            raise PackageError(f"{pkg}: member '{info.name}' is outside bundle/; refused")
        rel = safe_name(info.name[len(BUNDLE_PREFIX):], pkg.name).as_posix()
        if not info.isreg():
            raise PackageError(f"{pkg}: member '{info.name}' is a link, folder or special file; refused")
        entry = listed.get(rel)
        if entry is None or rel in seen:
            raise PackageError(f"{pkg}: member '{info.name}' is not in the signed manifest (or repeats); refused")
        if info.size != entry.bytes:
            raise PackageError(f"{pkg}: '{rel}' has {info.size} bytes, the signed manifest says {entry.bytes}; "
                               "refused")
        seen.add(rel)
        yield info, rel, entry
    missing = sorted(set(listed) - seen)
    if missing:
        raise PackageError(f"{pkg}: {len(missing)} signed file(s) missing from the archive ({missing[0]}, ...): "
                           "truncated or tampered; refused")


class _Discard:
    def write(self, block: bytes) -> None:
        pass


def verify_package(pkg: Path, trusted_keys: TrustedKeys, limits: Limits = Limits()) -> VerifiedPackage:
    """Signature and every file hash checked, nothing written. Raises PackageError with one line."""
    pkg = Path(pkg)
    trusted = _trusted(trusted_keys)
    try:
        with _open(pkg) as tar:
            manifest = _read_manifest(tar, pkg)
            signer = _check_signature(manifest, trusted, pkg)
            listed = _check_listing(manifest, limits, pkg)
            for info, rel, entry in _members(tar, listed, pkg):
                digest = hashlib.sha256()
                copy_bounded(tar.extractfile(info), _Discard(), info.size, digest.update)
                if digest.hexdigest() != entry.sha256:
                    raise PackageError(f"{pkg}: '{rel}' does not match its signed sha256 (tampered); refused")
    except UnsafeArchive as err:
        raise PackageError(f"{pkg}: {err}") from None
    except ARCHIVE_ERRORS + (OSError,) as err:
        raise PackageError(f"{pkg}: truncated or corrupt archive ({err}); refused") from None
    return VerifiedPackage(pkg, manifest, signer)


def _same_install(folder: Path, manifest: PackageManifest) -> bool:
    return all((folder / f.path).is_file() and (folder / f.path).stat().st_size == f.bytes
               and sha256_of(folder / f.path) == f.sha256 for f in manifest.files)


def _check_space(dest: Path, needed: int, pkg: Path) -> None:
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + (1 << 20):
        raise PackageError(f"{pkg}: needs {needed / 1e6:.1f} MB and {probe} has {free / 1e6:.1f} MB free; "
                           "nothing was installed")


def _unpack(pkg: Path, listed: dict, staging: Path) -> None:
    with _open(pkg) as tar:
        for info, rel, entry in _members(tar, listed, pkg):
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as dst:
                copy_bounded(tar.extractfile(info), dst, info.size, digest.update)
                dst.flush()
                os.fsync(dst.fileno())                      # on disk before the rename makes it visible
            if digest.hexdigest() != entry.sha256:
                raise PackageError(f"{pkg}: '{rel}' changed between verification and unpacking; refused")


def install_package(pkg: Path, dest_root: Path, trusted_keys: TrustedKeys, limits: Limits = Limits()) -> Path:
    """Verify, then install the bundle as `dest_root/<name>/<version>`; returns that folder. The same
    package installed again returns the existing folder; anything else already there is left alone."""
    pkg, dest_root = Path(pkg), Path(dest_root)
    verified = verify_package(pkg, trusted_keys, limits)
    manifest = verified.manifest
    final = dest_root / manifest.name / manifest.version
    if final.exists():
        if _same_install(final, manifest):
            return final
        raise PackageError(f"{pkg}: {final} already exists with other content; refused (nothing changed)")
    _check_space(dest_root, manifest.total_bytes, pkg)
    staging = final.with_name(f".staging-{manifest.version}-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _unpack(pkg, _check_listing(manifest, limits, pkg), staging)
        Bundle.open(staging, verify=True)
        os.rename(staging, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)                                    # the rename itself survives a power cut
        finally:
            os.close(fd)
    except BundleError as err:
        raise PackageError(f"{pkg}: the unpacked bundle fails its own check ({err}); refused") from None
    except UnsafeArchive as err:
        raise PackageError(f"{pkg}: {err}") from None
    except ARCHIVE_ERRORS as err:
        raise PackageError(f"{pkg}: truncated or corrupt archive ({err}); refused") from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise PackageError(f"{pkg}: the disk under {dest_root} is full; nothing was installed") from None
        raise PackageError(f"{pkg}: cannot install into {dest_root}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not final.exists():
            try:
                final.parent.rmdir()                        # only when empty: the name folder we just made
            except OSError:
                pass
    return final
