"""Where the daemon's images come from. One class per kind of source, chosen through `SOURCES`.

A source hands out `Frame`s without blocking; the daemon asks again after its poll interval when
there is nothing. Video files, cameras, RTSP streams and serial triggers join as more classes in
the table, each saying which source specs it accepts (a URL scheme, a device path, ...).
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from runtimes.errors import ConfigError
from runtimes.image import IMAGE_SUFFIXES, read_image

log = logging.getLogger("edge.daemon.sources")

# An empty file is usually one whose writer has not started writing yet: give it longer.
EMPTY_FILE_GRACE_S = 5.0


@dataclass
class Frame:
    source: str                          # what result and error messages name as their source
    load: Callable[[], np.ndarray]       # -> BGR image; raises ImageError if it cannot be decoded


class Source(ABC):
    kind: str = ""

    @abstractmethod
    def __init__(self, spec: str, poll_interval: float):
        """Open the source `spec` names; raise ConfigError (one line) if it cannot be used."""

    @classmethod
    @abstractmethod
    def accepts(cls, spec: str) -> bool:
        """Whether `spec` (the --source value) names a source of this kind."""

    @abstractmethod
    def next_frame(self) -> Frame | None:
        """The next frame if one is ready now, else None. Never blocks for long."""

    def close(self) -> None:
        """Release whatever the source holds (a camera, a stream)."""


class FolderSource(Source):
    """Image files in one folder: those already there by name, then new ones as they appear.

    A file is taken once its size and modification time have not changed for `settle_s` seconds,
    so a file still being copied in is not read half-written. Each file name is taken once; a name
    that disappears and comes back is a new file. Hidden files (a writer's temporary `.name`)
    and names without an image suffix are left alone.
    """

    kind = "folder"

    def __init__(self, spec: str, poll_interval: float = 0.5):
        self.root = Path(spec).expanduser()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise ConfigError(f"folder {self.root} {what}", field="source")
        self.settle_s = poll_interval       # one poll with no change: the writer is done
        self._taken: set[str] = set()
        self._settling: dict[str, tuple[tuple[int, int], float]] = {}   # name -> (size, mtime), since
        self._ready: deque[Path] = deque()
        self._missing = False

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return "://" not in spec

    def next_frame(self) -> Frame | None:
        if not self._ready:
            self._scan()
        if not self._ready:
            return None
        path = self._ready.popleft()
        return Frame(source=str(path), load=lambda: read_image(path))

    def _scan(self) -> None:
        present = self._image_files()
        if present is None:
            return
        now = time.monotonic()
        ready = []
        for name, signature in present.items():
            if name in self._taken:
                continue
            previous = self._settling.get(name)
            if previous is None or previous[0] != signature:
                self._settling[name] = (signature, now)
                continue
            wait = self.settle_s if signature[0] > 0 else max(self.settle_s, EMPTY_FILE_GRACE_S)
            if now - previous[1] >= wait:
                ready.append(name)
        for name in sorted(ready):
            del self._settling[name]
            self._taken.add(name)
            self._ready.append(self.root / name)
        # Forget names that left the folder, so a file added again under the same name is new.
        self._taken.intersection_update(present)
        self._settling = {n: s for n, s in self._settling.items() if n in present}

    def _image_files(self) -> dict[str, tuple[int, int]] | None:
        """name -> (size, mtime_ns) of the image files now in the folder; None if it is gone."""
        try:
            entries = list(os.scandir(self.root))
        except OSError as err:
            if not self._missing:
                log.warning("source folder %s is unreadable (%s); waiting for it", self.root, err.strerror)
            self._missing = True
            return None
        if self._missing:
            log.info("source folder %s is back", self.root)
            self._missing = False
        files = {}
        for entry in entries:
            if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                if entry.is_file():
                    stat = entry.stat()
                    files[entry.name] = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                continue    # removed between listing and stat
        return files


SOURCES: dict[str, type[Source]] = {cls.kind: cls for cls in (FolderSource,)}


def open_source(spec: str, poll_interval: float) -> Source:
    """The source that `spec` names; the first class in SOURCES that accepts it."""
    for cls in SOURCES.values():
        if cls.accepts(spec):
            return cls(spec, poll_interval)
    raise ConfigError(f"'{spec}' is not a source this edge can read (it reads: {', '.join(SOURCES)})",
                      field="source")
