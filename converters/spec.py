"""What an export's metadata says about one model, before any artifact exists.

`ModelSpec` is read from the toolkit's metadata (converters/metadata/*) and later becomes the
bundle's `ModelEntry` once artifacts are built and chosen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtimes.bundle import TensorSpec


@dataclass
class ModelSpec:
    role: str                                   # det / cls / rec / detector / pose / classifier / segmenter
    task: str                                   # the pipeline this role belongs to: ocr / detection / ...
    name: str
    input: TensorSpec
    preprocess: list[dict[str, Any]]            # runtimes.tasks.preprocess ops
    postprocess: dict[str, Any]                 # {"kind": ..., params}; file params name bundle files
    labels: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)    # bundle file name -> text content (dictionaries)
    metadata_path: Path | None = None


@dataclass
class ExportSource:
    """One SRC given to `edge convert`: where its program, weights and metadata are."""
    path: Path
    format: str                                 # paddle-legacy / paddle-pir / onnx
    model_file: Path
    params_file: Path | None
    spec: ModelSpec
