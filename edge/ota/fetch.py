"""Getting an offered package into the state folder, resumably: chunks over MQTT, or an HTTP(S) URL.

Chunks: the device asks for a few chunk indexes at a time on `edge/<id>/ota/want`; the operator answers
each on `edge/<id>/ota/chunk/<offer>/<index>` (QoS 1) with the chunk's sha256 (32 bytes) and its data.
A chunk that checks is written at its offset in `package.part` and synced, then its index is appended to
`chunks.log`; after a restart (of the daemon or the broker) the log says what is there and only the rest
is asked for. A chunk asked for and not received within the timeout is asked for again. The whole file
must then match the offer's sha256 before anything else looks at it (and the signature after that).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from runtimes.bundle import sha256_of
from runtimes.errors import EdgeError

log = logging.getLogger("edge.ota")

PACKAGE, PART, CHUNK_LOG = "package.edgepkg", "package.part", "chunks.log"
DIGEST_BYTES = 32


class FetchError(EdgeError):
    """The package could not be fetched whole and intact."""


def chunk_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


def encode_chunk(data: bytes) -> bytes:
    return hashlib.sha256(data).digest() + data


class ChunkDownload:
    def __init__(self, folder: Path, offer: dict[str, Any]):
        self.folder, self.offer = Path(folder), offer
        self.size, self.chunk_size = offer["size"], offer["chunk_size"]
        self.count = chunk_count(self.size, self.chunk_size)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.part, self.log_path = self.folder / PART, self.folder / CHUNK_LOG
        self.have = self._read_log()
        if self.have:
            log.info("OTA: resuming the download: %d of %d chunk(s) already here", len(self.have), self.count)
        self.asked: dict[int, float] = {}           # index -> when it was asked for
        self.received_bytes = 0                      # bytes of chunk data received in this process

    def _read_log(self) -> set[int]:
        if not self.part.exists():
            self.log_path.unlink(missing_ok=True)
            return set()
        have = set()
        for line in self.log_path.read_text(encoding="ascii", errors="replace").splitlines() \
                if self.log_path.exists() else ():
            if line.isdigit() and int(line) < self.count:      # a torn last line is simply asked for again
                have.add(int(line))
        return have

    @property
    def done_bytes(self) -> int:
        last = self.count - 1
        return sum(self.size - last * self.chunk_size if i == last else self.chunk_size for i in self.have)

    @property
    def complete(self) -> bool:
        return len(self.have) == self.count

    def wants(self, window: int, timeout: float, now: float | None = None) -> list[int]:
        """Indexes to ask for now: those asked too long ago again, and new ones up to `window` in flight."""
        now = time.monotonic() if now is None else now
        again = [i for i, when in self.asked.items() if now - when >= timeout]
        for index in again:
            del self.asked[index]
        room = window - len(self.asked)
        fresh = [i for i in range(self.count) if i not in self.have and i not in self.asked][:max(room, 0)]
        for index in fresh:
            self.asked[index] = now
        return fresh

    def accept(self, index: int, payload: bytes) -> bool:
        """Write a chunk that checks; False (and asked for again later) for one that does not."""
        if not 0 <= index < self.count:
            return False
        self.asked.pop(index, None)
        if index in self.have:
            return True                               # a QoS 1 duplicate
        digest, data = payload[:DIGEST_BYTES], payload[DIGEST_BYTES:]
        expected = min(self.chunk_size, self.size - index * self.chunk_size)
        if len(data) != expected or hashlib.sha256(data).digest() != digest:
            log.warning("OTA chunk %d of %d is damaged (%d bytes); asking again", index, self.count, len(data))
            return False
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, index * self.chunk_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(self.log_path, "a", encoding="ascii") as fh:    # after the data is on disk, never before
            fh.write(f"{index}\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.have.add(index)
        self.received_bytes += len(data)
        return True

    def finish(self) -> Path:
        """The whole file, checked against the offer's sha256, renamed to package.edgepkg."""
        digest = sha256_of(self.part)
        if digest != self.offer["sha256"]:
            self.part.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
            self.have.clear()
            raise FetchError(f"the assembled package's sha256 {digest[:16]}... does not match the offer's "
                             f"{self.offer['sha256'][:16]}...; fetching it again")
        final = self.folder / PACKAGE
        os.replace(self.part, final)
        self.log_path.unlink(missing_ok=True)
        return final


class UrlDownload:
    """The package from an HTTP(S) URL in a thread (resumed with a Range request; edge.zoo.download)."""

    def __init__(self, folder: Path, offer: dict[str, Any]):
        self.folder, self.offer = Path(folder), offer
        self.done_bytes, self.error, self.path = 0, None, None
        self._thread = threading.Thread(target=self._run, name="ota-url", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ..zoo.download import download

        def progress(done: int, total: int | None) -> None:
            self.done_bytes = done

        try:
            self.path = download(self.offer["url"], self.folder / PACKAGE, sha256=self.offer["sha256"],
                                 progress=progress).path
        except EdgeError as err:
            self.error = str(err)
        except Exception as err:        # reported as the update's failure, never a dead daemon
            self.error = f"{type(err).__name__}: {err}"

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()
