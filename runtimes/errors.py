"""The one exception root of edge. Every message is written for the person at the terminal."""
from __future__ import annotations


class EdgeError(Exception):
    """Root of every error edge raises on purpose; the CLI prints str(err) as one line."""


def one_line(text: str, limit: int = 1000) -> str:
    """`text` as one line: what is not printable (line breaks, control characters that a file name or a
    misspelt key brought in) is shown as its escape, so a terminal or a log shows exactly one line; a line
    over `limit` characters (it quotes a huge input) keeps its start and end."""
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return line if len(line) <= limit else f"{line[:limit * 2 // 3]} [...] {line[-limit // 3:]}"


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
