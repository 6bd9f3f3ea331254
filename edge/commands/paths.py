"""Checks of the paths a command writes to, made before any work: one clear line at once instead of a
traceback (or a lost conversion) at the end."""
from __future__ import annotations

import tempfile
from pathlib import Path

from runtimes.errors import EdgeError


def writable_folder(path: Path, what: str, given: Path | None = None) -> Path:
    """`path` as a folder the command may write into, created (with its parents) when missing; errors name
    `given`, the path the user typed, when `path` is derived from it."""
    if path.exists() and not path.is_dir():
        raise EdgeError(f"{what} {given or path}: {path} exists and is not a folder" if given else
                        f"{what} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):      # root passes every permission check; a read-only disk does not
            pass
    except OSError as err:
        raise EdgeError(f"{what} {given or path}: cannot write in {path} ({err.strerror or err})") from None
    return path


def bundle_output(path: Path, what: str = "-o") -> Path:
    """Where `edge convert` writes a bundle: nothing there, an empty folder, or a bundle it may replace."""
    if path.exists():
        if not path.is_dir():
            raise EdgeError(f"{what} {path}: exists and is not a folder")
        if not (path / "manifest.json").is_file() and any(path.iterdir()):
            raise EdgeError(f"{what} {path}: exists and is not a bundle; refusing to overwrite it "
                            "(give a new or empty folder)")
    writable_folder(path.parent, what, given=path)
    return path
