"""Export metadata readers, one module per toolkit format, tried in table order.

Each reader module offers `claims(doc) -> bool` (is this file mine?) and `read(doc) -> ModelSpec`.
"""
from __future__ import annotations

from pathlib import Path

from runtimes.errors import MetadataError
from runtimes.yamlconfig import read_yaml

from ..spec import ModelSpec
from . import paddleclas, paddledet, paddleocr, paddleseg
from .base import MetaDoc

READERS = [paddleocr, paddleclas, paddledet, paddleseg]
METADATA_NAMES = ("inference.yml", "infer_cfg.yml", "deploy.yaml", "deploy.yml")


def find_metadata(folder: Path) -> Path:
    for name in METADATA_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise MetadataError(f"no export metadata here (looked for {', '.join(METADATA_NAMES)}); "
                        "export the model with its toolkit's export script, which writes it", path=str(folder))


def read_spec(metadata: Path) -> ModelSpec:
    data, node = read_yaml(metadata)
    doc = MetaDoc(metadata, data, node)
    if not isinstance(data, dict):
        raise doc.error("expected a mapping at the top level")
    for reader in READERS:
        if reader.claims(doc):
            return reader.read(doc)
    raise doc.error("unknown export metadata: no reader recognises this file "
                    "(supported: PaddleOCR/PaddleClas/PaddleX inference.yml, PaddleDetection infer_cfg.yml, "
                    "PaddleSeg deploy.yaml)")
