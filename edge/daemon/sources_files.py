"""Sources of files: a watched folder, a list of images, a video file. Every input is handed out, in
order, none skipped (a video may be thinned to every Nth frame on purpose)."""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Literal

import cv2
import yaml
from pydantic import Field, model_validator

from runtimes.image import IMAGE_SUFFIXES, read_image

from .sources_base import Frame, Source, SourceConfigBase, SourceError, image_loader

log = logging.getLogger("edge.daemon.sources")

# An empty file is usually one whose writer has not started writing yet: give it longer.
EMPTY_FILE_GRACE_S = 5.0
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


class FolderConfig(SourceConfigBase):
    type: Literal["folder"] = "folder"
    path: Path
    settle_s: float | None = Field(None, gt=0, le=600)   # None: one poll interval


class FolderSource(Source):
    """Image files in one folder: those already there by name, then new ones as they appear.

    A file is taken once its size and modification time have not changed for `settle_s` seconds,
    so a file still being copied in is not read half-written. Each file name is taken once; a name
    that disappears and comes back is a new file. Hidden files (a writer's temporary `.name`)
    and names without an image suffix are left alone.
    """

    kind = "folder"
    config_model = FolderConfig

    def __init__(self, config: FolderConfig | str, poll_interval: float = 0.5):
        if isinstance(config, str):
            config = FolderConfig(path=config)
        self.root = config.path.expanduser()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise SourceError(f"folder {self.root} {what}")
        self.settle_s = config.settle_s or poll_interval       # one poll with no change: the writer is done
        self._taken: set[str] = set()
        self._settling: dict[str, tuple[tuple[int, int], float]] = {}   # name -> (size, mtime), since
        self._ready: deque[tuple[Path, tuple[int, int]]] = deque()
        self._missing = False

    def next_frame(self) -> Frame | None:
        if not self._ready:
            self._scan()
        if not self._ready:
            return None
        path, (size, mtime_ns) = self._ready.popleft()
        return Frame(source=str(path), load=lambda: read_image(path), key=f"{path}|{size}|{mtime_ns}")

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
            self._ready.append((self.root / name, present[name]))
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


class ListConfig(SourceConfigBase):
    """Either `file` (one path a line, `#` comments; or a YAML list) or `paths` inline, not both."""

    type: Literal["list"] = "list"
    target_field = "file"
    file: Path | None = None
    paths: list[Path] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "ListConfig":
        if (self.file is None) == (self.paths is None):
            raise ValueError("give either 'file' (a list file) or 'paths' (the images), not both or neither")
        return self


class ListSource(Source):
    """The images a list names, each once, in list order. Relative paths in a list file are relative to
    that file; inline `paths` to the daemon's working folder."""

    kind = "list"
    config_model = ListConfig

    def __init__(self, config: ListConfig, poll_interval: float = 0.5):
        entries = read_list_file(config.file) if config.file else [(f"entry {i + 1}", p)
                                                                  for i, p in enumerate(config.paths or [])]
        where = f"list {config.file}" if config.file else "list"
        if not entries:
            raise SourceError(f"{where} names no images")
        for label, path in entries:
            if not path.is_file():
                raise SourceError(f"{where}: {label}: {path} does not exist")
        self._paths = [path for _label, path in entries]
        self._next = 0

    def next_frame(self) -> Frame | None:
        if self._next >= len(self._paths):
            return None
        index, path = self._next, self._paths[self._next]
        self._next += 1
        return Frame(source=str(path), load=lambda: read_image(path), index=index, key=f"{path}#{index}")

    @property
    def finished(self) -> bool:
        return self._next >= len(self._paths)


def read_list_file(file: Path) -> list[tuple[str, Path]]:
    """(label for messages, resolved path) for each entry of a list file."""
    try:
        text = file.expanduser().read_text(encoding="utf-8")
    except OSError as err:
        raise SourceError(f"list {file}: cannot read ({err.strerror})") from None
    base = file.expanduser().parent
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SourceError(f"list {file}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise SourceError(f"list {file}: expected a YAML list of image paths")
        return [(f"entry {i + 1}", base / Path(item).expanduser()) for i, item in enumerate(items)]
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((f"line {number}", base / Path(line).expanduser()))
    return entries


class VideoConfig(SourceConfigBase):
    """`every`: take every Nth frame; `fps`: take about this many frames per second of video. One of them."""

    type: Literal["video"] = "video"
    path: Path
    every: int = Field(1, ge=1)
    fps: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_rate(self) -> "VideoConfig":
        if self.fps is not None and self.every != 1:
            raise ValueError("give 'every' or 'fps', not both")
        return self


class VideoFileSource(Source):
    """Frames of a video file, each one (or every Nth), in order; finished at the end of the file."""

    kind = "video"
    config_model = VideoConfig

    def __init__(self, config: VideoConfig, poll_interval: float = 0.5):
        self.path = config.path.expanduser()
        if not self.path.is_file():
            raise SourceError(f"video {self.path} does not exist")
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise SourceError(f"video {self.path}: cannot be opened (not a video, or a codec this OpenCV lacks)")
        video_fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.step = config.every
        if config.fps is not None:
            if video_fps <= 0:
                log.warning("video %s does not say its frame rate; taking every frame", self.path)
            self.step = max(1, round(video_fps / config.fps)) if video_fps > 0 else 1
        self.expected = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)   # container's claim; may be 0
        self.position = 0                  # index of the next frame in the file
        self._done = False

    def next_frame(self) -> Frame | None:
        if self._done:
            return None
        # Frames between the ones taken are grabbed, not retrieved: no colour conversion spent on them.
        while self.position % self.step:
            if not self._capture.grab():
                return self._end()
            self.position += 1
        ok, image = self._capture.read()
        if not ok or image is None:
            return self._end()
        index = self.position
        self.position += 1
        name = f"{self.path}#frame={index}"
        return Frame(source=name, load=image_loader(image), index=index, key=name)

    def _end(self) -> None:
        self._done = True
        self._capture.release()
        if self.expected and self.position < self.expected:
            log.warning("video %s ended at frame %d of the %d its header announces (cut short or damaged)",
                        self.path, self.position, self.expected)
        else:
            log.info("video %s: all %d frames read", self.path, self.position)
        return None

    @property
    def finished(self) -> bool:
        return self._done

    def close(self) -> None:
        self._capture.release()
