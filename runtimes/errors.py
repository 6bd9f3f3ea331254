"""The one exception root of edge. Every message is written for the person at the terminal."""
from __future__ import annotations


class EdgeError(Exception):
    """Root of every error edge raises on purpose; the CLI prints str(err) as one line."""


class ConfigError(EdgeError):
    """A YAML/JSON config (profile, daemon config, export metadata) is wrong.

    Carries the file, the line (when known) and the field so the user can go straight there.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class MetadataError(ConfigError):
    """An export's metadata (inference.yml, infer_cfg.yml, deploy.yaml) is missing, unknown or inconsistent."""


class BundleError(EdgeError):
    """A bundle is missing, unreadable, or fails its hash checks."""


class BackendError(EdgeError):
    """An inference backend could not load or run an artifact."""


class ImageError(EdgeError):
    """An input image cannot be decoded (corrupt, truncated, not an image)."""


class ConversionError(EdgeError):
    """A converter pass failed; the message says which pass and why."""


class UnsupportedTargetError(ConversionError):
    """The profile asks for an artifact this build cannot produce yet."""
