"""Shared helpers for reading a toolkit's export metadata with errors that name the file and key."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from runtimes.errors import MetadataError
from runtimes.yamlconfig import _line_of


class MetaDoc:
    """A parsed metadata file that can point at the line of any key path when something is wrong."""

    def __init__(self, path: Path, data: Any, node: yaml.Node | None):
        self.path, self.data, self.node = path, data, node

    def error(self, message: str, *keys: Any) -> MetadataError:
        field = ".".join(str(k) for k in keys) or None
        return MetadataError(message, path=str(self.path), line=_line_of(self.node, keys) if keys else None,
                             field=field)

    def get(self, *keys: Any, default: Any = ...) -> Any:
        value = self.data
        for key in keys:
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and isinstance(key, int) and key < len(value):
                value = value[key]
            else:
                if default is ...:
                    raise self.error("required key is missing", *keys)
                return default
        return value


def as_number(doc: MetaDoc, value: Any, *keys: Any) -> float:
    """Numbers in these files are sometimes written as expressions like `1./255.`."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                return float(Fraction(num.rstrip(".") or "0")) / float(Fraction(den.rstrip(".")))
            return float(text)
        except (ValueError, ZeroDivisionError):
            pass
    raise doc.error(f"expected a number, found {value!r}", *keys)


def as_ops(doc: MetaDoc, items: Any, *keys: Any) -> list[tuple[str, dict[str, Any], int]]:
    """PaddleOCR/PaddleClas write ops as `- Name: {params}`; PaddleDetection/PaddleSeg as `- type: Name`."""
    if not isinstance(items, list):
        raise doc.error("expected a list of operations", *keys)
    ops = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "type" in item:
            params = {k: v for k, v in item.items() if k != "type"}
            ops.append((str(item["type"]), params, index))
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            ops.append((str(name), params or {}, index))
        else:
            raise doc.error("cannot read this operation", *keys, index)
    return ops


def export_name(doc: MetaDoc) -> str:
    """The model's name: PaddleX's Global.model_name, else the export folder's name."""
    named = doc.get("Global", "model_name", default=None)
    if named:
        return str(named)
    folder = doc.path.parent
    # a Paddle 3 re-save often sits in a `pir/` (or `inference/`) sub-folder of the named export
    return folder.parent.name if folder.name in ("pir", "inference") else folder.name
