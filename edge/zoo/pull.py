"""`edge models pull NAME`: an official export from the zoo table into the cache, ready for `edge convert`.

Cache (under runtimes.toolpaths.cache_root(), i.e. EDGE_CACHE_DIR or $XDG_CACHE_HOME/edge):
  zoo/archives/FILE          the downloaded archives and extra files, whole and verified (FILE.part while
                             a download is unfinished)
  zoo/pins.json              sha256 of every file first downloaded without a published checksum: a later
                             download that differs is refused (the publisher changed it, or something in
                             between did)
  zoo/models/NAME/           the unpacked export folder (safe extraction), plus `.edge-zoo.json` saying
                             what it was made from; it is replaced only by a complete new one
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from runtimes.errors import EdgeError
from runtimes.toolpaths import cache_root

from ..packaging.safe_extract import extract_archive
from .catalog import METADATA_DIR, ZooModel, effective_url, load, url_file_name
from .download import DownloadResult, Progress, download

MARKER = ".edge-zoo.json"
# the metadata files the converter reads (converters.metadata.METADATA_NAMES); one of them makes an export
METADATA_NAMES = ("inference.yml", "infer_cfg.yml", "deploy.yaml", "deploy.yml")


class ZooError(EdgeError):
    """A zoo name is unknown, or a pulled file is refused."""


def zoo_dir() -> Path:
    return cache_root() / "zoo"


@dataclass
class Pulled:
    name: str
    folder: Path
    sha256: str
    cached: bool               # nothing was downloaded or unpacked: the folder was there
    check: str                 # how the archive was checked: published sha256, pinned now, matches the pin


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_pin(key: str, url: str, digest: str, published: str | None) -> str:
    """Compare with the published sha256, else with (or record) the pin; refuse a changed file."""
    if published:
        return "published sha256"
    pins_path = zoo_dir() / "pins.json"
    with _locked(zoo_dir() / ".pins.lock"):
        pins = json.loads(pins_path.read_text(encoding="utf-8")) if pins_path.is_file() else {}
        pin = pins.get(key)
        if pin is None:
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")
            pins[key] = {"sha256": digest, "url": url, "pinned": when}
            tmp = pins_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, pins_path)
            return "sha256 pinned on this first download"
    if pin["sha256"] != digest:
        raise ZooError(f"{key}: the file from {url} has sha256 {digest[:16]}..., not the {pin['sha256'][:16]}... "
                       f"pinned on {pin['pinned']}; refused (if the publisher really replaced it, delete its "
                       f"entry from {pins_path})")
    return "matches the sha256 pinned on " + pin["pinned"][:10]


def _fetch(key: str, url: str, published: str | None, base_url: str | None, progress: Progress,
           force: bool) -> tuple[DownloadResult, str]:
    dest = zoo_dir() / "archives" / url_file_name(url)
    if force:
        dest.unlink(missing_ok=True)
    source = effective_url(url, base_url)
    result = download(source, dest, sha256=published, progress=progress)
    try:
        return result, _check_pin(key, source, result.sha256, published)
    except ZooError:
        dest.unlink(missing_ok=True)          # never keep a refused file where the next pull would reuse it
        raise


def _export_root(unpacked: Path) -> Path:
    """Archives hold one folder (`ch_PP-OCRv4_det_infer/...`); some hold the files at the top."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked


def _write_metadata(root: Path, model: ZooModel) -> str | None:
    if model.metadata is None or any((root / name).is_file() for name in METADATA_NAMES):
        return None
    target = model.metadata.split(".", 1)[1]           # "ppocrv4-det.inference.yml" -> "inference.yml"
    shutil.copyfile(METADATA_DIR / model.metadata, root / target)
    return target


def pull(name: str, *, base_url: str | None = None, force: bool = False,
         progress: Callable[[str, int, int | None], None] = lambda what, done, total: None) -> Pulled:
    """The export folder of zoo model `name`, downloaded, verified and unpacked once."""
    catalog = load()
    model = catalog.models.get(name)
    if model is None:
        raise ZooError(f"no model '{name}' in the zoo (edge models list shows the names)")
    folder = zoo_dir() / "models" / name
    with _locked(zoo_dir() / f".{name}.lock"):
        marker = folder / MARKER
        if marker.is_file() and not force:
            info = json.loads(marker.read_text(encoding="utf-8"))
            return Pulled(name, folder, info["sha256"], True, info["check"])
        archive, check = _fetch(name, model.url, model.sha256, base_url,
                                lambda done, total: progress(model.file_name, done, total), force)
        staging = folder.with_name(f".{name}.staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            extract_archive(archive.path, staging)
            root = _export_root(staging)
            extras = {}
            for extra in model.files:
                got, _ = _fetch(f"{name}/{extra.name}", extra.url, extra.sha256, base_url,
                                lambda done, total: progress(extra.name, done, total), force)
                shutil.copyfile(got.path, root / extra.name)
                extras[extra.name] = got.sha256
            written = _write_metadata(root, model)
            (root / MARKER).write_text(json.dumps(
                {"name": name, "url": effective_url(model.url, base_url), "sha256": archive.sha256, "check": check,
                 "files": extras, "metadata_written": written}, indent=1), encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(root, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Pulled(name, folder, archive.sha256, False, check)


def resolve_sources(sources: list[str], *, base_url: str | None = None,
                    progress: Callable[[str, int, int | None], None] = lambda what, done, total: None) -> list[str]:
    """`edge convert` sources with zoo names (or group names) replaced by their pulled export folders.
    An existing path always wins over a zoo name; anything else is left for the converter to judge."""
    catalog = load()
    resolved: list[str] = []
    for source in sources:
        names = None if Path(source).exists() else catalog.expand(source)
        if names is None:
            resolved.append(source)
        else:
            resolved += [str(pull(n, base_url=base_url, progress=progress).folder) for n in names]
    return resolved
