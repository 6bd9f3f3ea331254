"""PaddleSeg `deploy.yaml`: semantic segmentation exports (PP-HumanSeg, PP-LiteSeg, ...).

The exporter (`paddleseg/core/export.py`) writes one `Deploy` block: the validation transforms of
the training config, the input shape it traced, and `output_op` — what it appended to the network:
`argmax` (int label map, the exporter's default and the only behaviour of exports older than the
key), `softmax` (class probabilities) or `none` (raw logits). PaddleSeg's `Compose` converts the
decoded BGR image to RGB before any transform (`to_rgb=True`), so the chain starts with `color`.

The file names no classes. Labels come from, in order: a `labels`/`label_list` list in the file,
a `labels.txt`/`label_list.txt` beside the export (one per line, PaddleSeg's dataset convention),
or — for PP-HumanSeg exports, which PaddleSeg names `*humanseg*` and trains as background/person —
["background", "person"]. Otherwise the task names classes by index.
"""
from __future__ import annotations

from typing import Any

from runtimes.bundle import TensorSpec

from ..spec import ModelSpec
from .base import MetaDoc, as_number, as_ops, export_name

# PaddleSeg's Normalize defaults: mean = std = 0.5 on values scaled to [0, 1]
DEFAULT_MEAN_STD = [0.5, 0.5, 0.5]
INTERP = {"NEAREST": "nearest", "LINEAR": "linear", "CUBIC": "cubic", "AREA": "area", "LANCZOS4": "lanczos"}
OUTPUT_OPS = {"argmax": "argmax", "softmax": "softmax", "none": "logits"}
LABEL_FILES = ("labels.txt", "label_list.txt")
HUMANSEG_LABELS = ["background", "person"]
KEYS = ("Deploy", "transforms")


def _pair(doc: MetaDoc, value: Any, *keys: Any) -> tuple[int, int]:
    if isinstance(value, (int, float)):
        return int(value), int(value)
    if isinstance(value, list) and len(value) == 2:
        return int(as_number(doc, value[0], *keys, 0)), int(as_number(doc, value[1], *keys, 1))
    raise doc.error(f"expected a size or [width, height], found {value!r}", *keys)


def _interp(doc: MetaDoc, params: dict[str, Any], *keys: Any) -> str:
    name = str(params.get("interp", "LINEAR")).upper()
    if name not in INTERP:
        raise doc.error(f"interpolation '{name}' is not supported (known: {', '.join(INTERP)})", *keys, "interp")
    return INTERP[name]


def _resize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index)
    width, height = _pair(doc, params.get("target_size", [512, 512]), *keys, "target_size")
    return {"op": "resize", "width": width, "height": height, "interp": _interp(doc, params, *keys),
            "keep_ratio": bool(params.get("keep_ratio", False))}


def _resize_by_long(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    # the long side becomes long_size: a keep-ratio resize into a long_size square
    side = int(as_number(doc, doc.get(*KEYS, index, "long_size"), *KEYS, index, "long_size"))
    return {"op": "resize", "width": side, "height": side, "keep_ratio": True,
            "interp": _interp(doc, params, *KEYS, index)}


def _resize_by_short(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    side = int(as_number(doc, doc.get(*KEYS, index, "short_size"), *KEYS, index, "short_size"))
    return {"op": "resize_short", "size": side, "interp": _interp(doc, params, *KEYS, index)}


def _normalize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index)
    return {"op": "normalize", "scale": 1 / 255,
            "mean": [as_number(doc, v, *keys, "mean") for v in params.get("mean", DEFAULT_MEAN_STD)],
            "std": [as_number(doc, v, *keys, "std") for v in params.get("std", DEFAULT_MEAN_STD)]}


TRANSFORMS = {"Resize": _resize, "ResizeByLong": _resize_by_long, "ResizeByShort": _resize_by_short,
              "Normalize": _normalize}


def _preprocess(doc: MetaDoc) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [{"op": "color", "order": "rgb"}]
    normalized = False
    for name, params, index in as_ops(doc, doc.get(*KEYS), *KEYS):
        if name not in TRANSFORMS:
            raise doc.error(f"transform '{name}' is not supported for deployment (known: "
                            f"{', '.join(TRANSFORMS)})", *KEYS, index)
        ops.append(TRANSFORMS[name](doc, params or {}, index))
        normalized = normalized or name == "Normalize"
    if not normalized:   # PaddleSeg's Compose always ends in float; without Normalize it is x / 1
        ops.append({"op": "normalize", "scale": 1.0})
    ops.append({"op": "to_chw"})
    return ops


def _input(doc: MetaDoc) -> TensorSpec:
    shape = doc.get("Deploy", "input_shape", default=None)
    if shape is None:
        return TensorSpec(name="x", shape=[None, 3, None, None])
    if not (isinstance(shape, list) and len(shape) == 4):
        raise doc.error(f"expected [batch, channels, height, width], found {shape!r}", "Deploy", "input_shape")
    dims = [None if d is None or int(d) < 0 else int(d) for d in shape]
    return TensorSpec(name="x", shape=[None, *dims[1:]])


def _labels(doc: MetaDoc, name: str) -> list[str] | None:
    for key in ("labels", "label_list"):
        listed = doc.get("Deploy", key, default=None) or doc.get(key, default=None)
        if listed is not None:
            if not isinstance(listed, list) or not listed:
                raise doc.error("expected a list of class names", key)
            return [str(v) for v in listed]
    for file_name in LABEL_FILES:
        beside = doc.path.parent / file_name
        if beside.is_file():
            return [ln.strip() for ln in beside.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return list(HUMANSEG_LABELS) if "humanseg" in name.lower() else None


def claims(doc: MetaDoc) -> bool:
    return doc.path.name in ("deploy.yaml", "deploy.yml") and isinstance(doc.get("Deploy", default=None), dict)


def read(doc: MetaDoc) -> ModelSpec:
    output_op = str(doc.get("Deploy", "output_op", default="argmax")).lower()
    if output_op not in OUTPUT_OPS:
        raise doc.error(f"unknown output_op '{output_op}' (known: {', '.join(OUTPUT_OPS)})", "Deploy", "output_op")
    name = export_name(doc)
    postprocess = {"kind": "segmentation", "output": OUTPUT_OPS[output_op], "threshold": 0.5,
                   "background": 0, "mask": True}
    spec = ModelSpec("segmenter", "segmentation", name, _input(doc), _preprocess(doc), postprocess,
                     _labels(doc, name))
    spec.metadata_path = doc.path
    return spec
