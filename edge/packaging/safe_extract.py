"""Unpacking archives edge did not make itself (a package that came over the network, a model-zoo archive)
without letting them write anywhere but their own folder.

Refused, before a byte is written: absolute names, `..` components, device files and FIFOs, names that
repeat, more than `Limits.max_files` entries or more than `Limits.max_bytes` in total (an archive bomb
declares its sizes in the headers; each file is then read no further than its declared size). Links are
created last and only when they resolve inside the folder, so no file is ever written through one.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable

from runtimes.errors import EdgeError

CHUNK = 1 << 20
# what a broken or cut-off tar/gzip/zip raises while it is read
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error)


class UnsafeArchive(EdgeError):
    """An archive that is corrupt, truncated, or would write outside its folder; nothing was kept."""


@dataclass(frozen=True)
class Limits:
    max_files: int = 10_000
    max_bytes: int = 4 << 30          # 4 GiB unpacked: far above any PP model or bundle


class Budget:
    """Counts entries and declared bytes against the limits while an archive's listing is read."""

    def __init__(self, limits: Limits, archive: str):
        self.limits, self.archive = limits, archive
        self.files = self.bytes = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += max(size, 0)
        if self.files > self.limits.max_files:
            raise UnsafeArchive(f"{self.archive}: more than {self.limits.max_files} entries; refused "
                                "(limit against archive bombs)")
        if self.bytes > self.limits.max_bytes:
            raise UnsafeArchive(f"{self.archive}: unpacks to more than {self.limits.max_bytes / 1e6:.0f} MB; "
                                "refused (limit against archive bombs)")


def safe_name(name: str, archive: str) -> PurePosixPath:
    """The entry's relative path, or UnsafeArchive when it is absolute, climbs with `..` or is empty."""
    if "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive}: entry '{name}' has an absolute or foreign path; refused")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: entry '{name}' climbs out with '..'; refused")
    if not parts:
        raise UnsafeArchive(f"{archive}: entry with an empty name; refused")
    return PurePosixPath(*parts)


def copy_bounded(src: BinaryIO, dst: BinaryIO, size: int, on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Copy exactly `size` bytes (the declared size); fewer means the archive was cut off."""
    left = size
    while left > 0:
        block = src.read(min(CHUNK, left))
        if not block:
            raise UnsafeArchive("the archive ends in the middle of a file (truncated download or copy)")
        if on_chunk:
            on_chunk(block)
        dst.write(block)
        left -= len(block)


def _inside(root: Path, path: Path) -> bool:
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


@dataclass
class _Entry:
    path: PurePosixPath
    kind: str                   # "file", "dir", "symlink", "hardlink"
    size: int = 0
    target: str = ""
    mode: int = 0o644
    source: object = None       # TarInfo or ZipInfo


def _tar_entries(tar: tarfile.TarFile, budget: Budget, archive: str) -> list[_Entry]:
    entries = []
    for info in tar:
        path = safe_name(info.name, archive)
        if info.isreg():
            entries.append(_Entry(path, "file", info.size, mode=info.mode, source=info))
        elif info.isdir():
            entries.append(_Entry(path, "dir"))
        elif info.issym():
            entries.append(_Entry(path, "symlink", target=info.linkname))
        elif info.islnk():
            entries.append(_Entry(path, "hardlink", target=str(safe_name(info.linkname, archive))))
        else:
            raise UnsafeArchive(f"{archive}: entry '{info.name}' is a device, FIFO or other special file; refused")
        budget.add(info.size if info.isreg() else 0)
    return entries


def _zip_entries(zf: zipfile.ZipFile, budget: Budget, archive: str) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        path = safe_name(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(f"{archive}: entry '{info.filename}' is a link; zip links are refused")
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafeArchive(f"{archive}: entry '{info.filename}' is a special file; refused")
        entries.append(_Entry(path, "dir") if info.is_dir() else _Entry(path, "file", info.file_size, source=info))
        budget.add(0 if info.is_dir() else info.file_size)
    return entries


def _check_unique(entries: list[_Entry], archive: str) -> None:
    seen: set[PurePosixPath] = set()
    for entry in entries:
        if entry.path in seen and entry.kind != "dir":
            raise UnsafeArchive(f"{archive}: entry '{entry.path}' appears twice; refused")
        seen.add(entry.path)


def _write_links(dest: Path, links: list[_Entry], archive: str) -> None:
    for entry in links:
        where = dest / entry.path
        if not _inside(dest, where.parent):
            raise UnsafeArchive(f"{archive}: link '{entry.path}' sits under a link that leads out; refused")
        where.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "hardlink":
            source = dest / entry.target
            if not source.is_file() or source.is_symlink() or not _inside(dest, source):
                raise UnsafeArchive(f"{archive}: hard link '{entry.path}' points at '{entry.target}', which is "
                                    "not a file of the archive; refused")
            shutil.copyfile(source, where)
            continue
        if os.path.isabs(entry.target):
            raise UnsafeArchive(f"{archive}: link '{entry.path}' points at the absolute path '{entry.target}'; "
                                "refused")
        os.symlink(entry.target, where)
        if not _inside(dest, where):
            where.unlink()
            raise UnsafeArchive(f"{archive}: link '{entry.path}' -> '{entry.target}' leads out of the folder; "
                                "refused")


def extract_archive(archive: Path, dest: Path, limits: Limits = Limits()) -> list[PurePosixPath]:
    """Unpack a .tar/.tar.gz/.tgz/.zip into `dest` (created; must not exist). On any refusal or error `dest`
    is removed again. Returns the relative paths of the regular files written."""
    name = archive.name
    dest.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                entries = _zip_entries(zf, Budget(limits, name), name)
                _check_unique(entries, name)
                return _write(dest, entries, lambda e: zf.open(e.source), name)
        with tarfile.open(archive, "r:*") as tar:
            entries = _tar_entries(tar, Budget(limits, name), name)
            _check_unique(entries, name)
            return _write(dest, entries, lambda e: tar.extractfile(e.source), name)
    except ARCHIVE_ERRORS as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchive(f"{name}: not a readable archive, or truncated ({err})") from None
    except OSError as err:
        shutil.rmtree(dest, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise UnsafeArchive(f"{name}: the disk is full while unpacking into {dest.parent}") from None
        raise UnsafeArchive(f"{name}: cannot unpack ({err})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _write(dest: Path, entries: list[_Entry], opener: Callable[[_Entry], BinaryIO], archive: str) -> list:
    written = []
    for entry in entries:                       # files and folders first: no link exists yet to write through
        target = dest / entry.path
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener(entry) as src, open(target, "wb") as dst:
                copy_bounded(src, dst, entry.size)
            os.chmod(target, 0o755 if entry.mode & 0o111 else 0o644)
            written.append(entry.path)
    _write_links(dest, [e for e in entries if e.kind in ("symlink", "hardlink")], archive)
    return written
