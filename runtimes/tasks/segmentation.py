"""Semantic segmentation (PaddleSeg exports: PP-HumanSeg, PP-LiteSeg, ...): one result per class found.

The model's map covers the resized (possibly padded) input; the part that shows the picture is
resized back to the original size *before* deciding pixels, so edges follow the probabilities
rather than blocky upscaled labels: two-class probability maps are thresholded (`threshold` on the
foreground channel), more classes take the argmax of the resized maps, and argmax exports (int
label maps) are resized with nearest neighbour. Masks travel as COCO RLE (runtimes.tasks.rle).
"""
from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bundle import Bundle, ModelEntry
from ..errors import BundleError
from ..run_context import RunContext
from . import rle
from .base import ModelRunner, Stopwatch, Task, TaskOutput, Timings
from .preprocess import Frame


class SegParams(BaseModel):
    """The segmenter's `postprocess` dict, as the manifest states it."""
    model_config = ConfigDict(extra="forbid")

    kind: Literal["segmentation"] = "segmentation"
    output: Literal["softmax", "logits", "argmax"] = "softmax"   # what the exported network ends with
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # two classes: foreground when its probability > this
    background: int | None = 0                     # class index not reported (None: report every class)
    mask: bool = True                              # include the RLE mask (off: label, area and box only)


def seg_params(entry: ModelEntry) -> SegParams:
    if entry.postprocess.get("kind") != "segmentation":
        raise BundleError(f"model '{entry.name}' ({entry.role}) has postprocess kind "
                          f"'{entry.postprocess.get('kind')}'; the segmentation task needs 'segmentation'")
    try:
        return SegParams.model_validate(entry.postprocess)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.{field}: {first['msg']}") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=0, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=0, keepdims=True)


def _visible(plane_hw: tuple[int, int], frame: Frame, input_hw: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of an output map that show the picture (the rest is padding)."""
    src_h, src_w = frame.src_hw
    sx, sy = frame.scale_xy
    rows = src_h * sy * plane_hw[0] / input_hw[0]
    cols = src_w * sx * plane_hw[1] / input_hw[1]
    return max(1, min(plane_hw[0], round(rows))), max(1, min(plane_hw[1], round(cols)))


def label_map(output: np.ndarray, frame: Frame, input_hw: tuple[int, int], params: SegParams) -> np.ndarray:
    """One image's model output ((C,H,W) scores or (H,W) labels) -> (src_h, src_w) int32 class map."""
    src_h, src_w = frame.src_hw
    if params.output == "argmax":
        labels = output.reshape(output.shape[-2:]).astype(np.int32)
        rows, cols = _visible(labels.shape, frame, input_hw)
        return cv2.resize(labels[:rows, :cols], (src_w, src_h), interpolation=cv2.INTER_NEAREST)
    scores = output.astype(np.float32, copy=False)
    rows, cols = _visible(scores.shape[1:], frame, input_hw)
    scores = scores[:, :rows, :cols]
    if scores.shape[0] == 2:   # binary: the foreground probability decides, at the threshold
        probs = _softmax(scores)[1] if params.output == "logits" else scores[1]
        fg = cv2.resize(np.ascontiguousarray(probs), (src_w, src_h), interpolation=cv2.INTER_LINEAR)
        return (fg > params.threshold).astype(np.int32)
    # argmax is unchanged by softmax, so logits and probabilities are treated alike
    planes = [cv2.resize(np.ascontiguousarray(p), (src_w, src_h), interpolation=cv2.INTER_LINEAR) for p in scores]
    return np.argmax(np.stack(planes), axis=0).astype(np.int32)


def describe(labels: np.ndarray, names: list[str] | None, params: SegParams) -> list[dict[str, Any]]:
    """Class map -> one result per class present (background left out), in class order."""
    results = []
    total = float(labels.size)
    for index in np.unique(labels).tolist():
        if index == params.background:
            continue
        mask = labels == index
        item: dict[str, Any] = {
            "label": names[index] if names and 0 <= index < len(names) else f"class_{index}",
            "area_ratio": round(float(mask.sum()) / total, 5),
            "box": rle.bbox(mask),
        }
        if params.mask:
            item["mask"] = rle.encode(mask)
        results.append(item)
    return results


class SegmentationTask(Task):
    name = "segmentation"

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        super().__init__(bundle, context)
        entry = bundle.manifest.model("segmenter")
        self.params = seg_params(entry)
        self.labels = entry.labels
        self.segmenter = ModelRunner(bundle, "segmenter", self.context)

    def __call__(self, image: np.ndarray) -> TaskOutput:
        timings = Timings()
        watch = Stopwatch(timings)
        labels = self.segment(image, watch)
        with watch("post"):
            results = describe(labels, self.labels, self.params)
        return TaskOutput(results=results, timings=timings)

    def segment(self, image: np.ndarray, watch: Stopwatch | None = None) -> np.ndarray:
        """BGR image -> (H, W) int32 class index per original pixel."""
        watch = watch or Stopwatch(Timings())
        with watch("pre"):
            tensor, frame = self.segmenter.preprocess(image)
        with watch("infer"):
            output = self.segmenter.infer(tensor)[0]
        with watch("post"):
            return label_map(output[0], frame, tensor.shape[-2:], self.params)
