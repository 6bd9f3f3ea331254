"""Task family registry: a pipeline's task name -> the class that feeds and judges its models."""
from __future__ import annotations

from runtimes.errors import ConversionError

from ..spec import ModelSpec
from .base import Evaluation, Family
from .classification import ClassificationFamily
from .detection import DetectionFamily
from .keypoints import KeypointsFamily
from .ocr import OcrFamily
from .segmentation import SegmentationFamily

FAMILIES: dict[str, type[Family]] = {cls.task: cls for cls in (OcrFamily, DetectionFamily, ClassificationFamily,
                                                              KeypointsFamily, SegmentationFamily)}


def family_for(task: str, specs: dict[str, ModelSpec], threads: int = 0) -> Family:
    if task not in FAMILIES:
        raise ConversionError(f"no quantization support for task '{task}' yet (known: {', '.join(FAMILIES)})")
    return FAMILIES[task](specs, threads)


__all__ = ["FAMILIES", "family_for", "Family", "Evaluation"]
