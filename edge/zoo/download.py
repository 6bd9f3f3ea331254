"""Resumable, verified HTTP(S) downloads into a cache file (the model zoo; any other fetch of a big file).

The bytes go to `DEST.part`; an interrupted transfer keeps them and the next attempt asks the server for
the rest (HTTP Range; a server that answers 200 instead of 206 is read again from the start). The file
gets its final name only after its sha256 is known (and matches, when one is expected), so a cached file
is always a whole one. Failures are one line: which host, what happened, what to do.
"""
from __future__ import annotations

import fcntl
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from runtimes.bundle import sha256_of
from runtimes.errors import EdgeError

CHUNK = 1 << 16
Progress = Callable[[int, "int | None"], None]      # (bytes so far, total bytes or None)


class DownloadError(EdgeError):
    """A download failed or was refused; the message is one line for the user."""


class _Interrupted(Exception):
    def __init__(self, done: int, total: int | None, reason: object):
        super().__init__(str(reason))
        self.done, self.total = done, total


@dataclass
class DownloadResult:
    path: Path
    sha256: str
    bytes: int
    resumed_from: int = 0        # bytes that were already in DEST.part when this call started
    cached: bool = False         # the whole file was already there: nothing was fetched


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _unreachable(url: str, reason: object, kept: int) -> DownloadError:
    host = urlsplit(url).netloc or url
    keep = f"; the {_mb(kept)} already downloaded are kept and the next try resumes" if kept else ""
    return DownloadError(f"cannot reach {host} ({reason}): offline, or the server is gone{keep}")


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse | None:
    """The response for the bytes from `have` on; None when the server says the range is already complete."""
    headers = {"User-Agent": "pp-edge", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return None
        raise DownloadError(f"{url}: the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _unreachable(url, getattr(err, "reason", err), have) from None


def _transfer(url: str, part: Path, timeout: float, progress: Progress) -> None:
    have = part.stat().st_size if part.exists() else 0
    response = _open(url, have, timeout)
    if response is None:
        return                                   # 416: nothing left to fetch; the hash check decides
    with response:
        resumed, total = False, None
        if response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not have or not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: the server answered with a range that was not asked for; "
                                    "the partial file was deleted, run it again")
            resumed, total = True, (int(match.group(2)) if match.group(2) != "*" else None)
        have = have if resumed else 0        # a 200 answer is the whole file, whatever we asked for
        if total is None and response.headers.get("Content-Length"):
            total = have + int(response.headers["Content-Length"])
        with open(part, "ab" if resumed else "wb") as fh:
            done = have
            progress(done, total)
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _Interrupted(done, total, err) from None
                if not block:
                    break
                fh.write(block)
                done += len(block)
                progress(done, total)
        if total is not None and done < total:
            raise _Interrupted(done, total, "the connection closed early")


def download(url: str, dest: Path, *, sha256: str | None = None, progress: Progress = lambda d, t: None,
             timeout: float = 30, retries: int = 2, retry_pause: float = 1.0) -> DownloadResult:
    """Fetch `url` into `dest` (resuming `dest.part`), verify it against `sha256` when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(f".{dest.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)         # two pulls of the same file: the second waits, then reuses
        if dest.is_file():
            digest = sha256_of(dest)
            if sha256 is None or digest == sha256:
                return DownloadResult(dest, digest, dest.stat().st_size, cached=True)
            dest.unlink()                        # a cached file that no longer matches: fetch it again
        part = dest.with_name(dest.name + ".part")
        started = part.stat().st_size if part.exists() else 0
        for attempt in range(retries + 1):
            try:
                _transfer(url, part, timeout, progress)
                break
            except _Interrupted as err:
                if attempt == retries:
                    raise DownloadError(f"{url}: interrupted at {_mb(err.done)} of {_mb(err.total)} ({err}); "
                                        "run the same command again to resume") from None
                time.sleep(retry_pause)
        if not part.exists():
            raise DownloadError(f"{url}: nothing was downloaded")
        digest = sha256_of(part)
        if sha256 and digest != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest} does not match the published {sha256}; "
                                "the file was deleted and nothing was used")
        size = part.stat().st_size
        os.replace(part, dest)
        return DownloadResult(dest, digest, size, resumed_from=started)

