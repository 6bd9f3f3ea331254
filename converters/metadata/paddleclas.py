"""PaddleClas / PaddleX `inference.yml`: image classifiers (PP-LCNet, PULC models, ...).

The exporter (`ppcls/utils/config.py::dump_infer_config`) writes the Infer transforms without
DecodeImage (`PreProcess.transform_ops`, `- Name: {params}` items) and the post-process under its
name with the class names inlined: `PostProcess: {Topk: {topk, label_list}}`. PaddleClas decodes
with `to_rgb: True` unless a DecodeImage in the list says otherwise, so the chain starts with
`color`. Its ResizeImage uses OpenCV (bilinear unless `interpolation` says otherwise), as we do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from runtimes.bundle import TensorSpec

from ..spec import ModelSpec
from .base import MetaDoc, as_number, as_ops, export_name

KEYS = ("PreProcess", "transform_ops")
INTERP = {"nearest": "nearest", "bilinear": "linear", "linear": "linear", "bicubic": "cubic", "cubic": "cubic",
          "area": "area", "lanczos": "lanczos"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LABEL_MAP_FILES = ("class_id_map.txt", "label_list.txt", "labels.txt")


def _size(doc: MetaDoc, value: Any, *keys: Any) -> tuple[int, int]:
    """PaddleClas sizes: one int (square) or [width, height]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, list) and len(value) == 2:
        return int(as_number(doc, value[0], *keys, 0)), int(as_number(doc, value[1], *keys, 1))
    raise doc.error(f"expected a size or [width, height], found {value!r}", *keys)


def _interp(doc: MetaDoc, params: dict[str, Any], *keys: Any) -> str:
    name = params.get("interpolation") or "bilinear"
    if str(name).lower() not in INTERP:
        raise doc.error(f"interpolation '{name}' is not supported (known: {', '.join(INTERP)})",
                        *keys, "interpolation")
    return INTERP[str(name).lower()]


def _resize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index, "ResizeImage")
    if params.get("backend", "cv2") != "cv2":
        raise doc.error("only the cv2 backend of ResizeImage is supported (PIL resizes differently)",
                        *keys, "backend")
    interp = _interp(doc, params, *keys)
    if params.get("resize_short") is not None:
        short = int(as_number(doc, params["resize_short"], *keys, "resize_short"))
        return {"op": "resize_short", "size": short, "interp": interp}
    if params.get("size") is None:
        raise doc.error("ResizeImage needs resize_short or size", *keys)
    width, height = _size(doc, params["size"], *keys, "size")
    return {"op": "resize", "width": width, "height": height, "interp": interp}


def _crop(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index, "CropImage")
    width, height = _size(doc, doc.get(*keys, "size"), *keys, "size")
    return {"op": "center_crop", "width": width, "height": height}


def _normalize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index, "NormalizeImage")
    if str(params.get("order", "") or "hwc").lower() != "hwc":
        raise doc.error("only HWC NormalizeImage (order '' or 'hwc') is supported", *keys, "order")
    if int(params.get("channel_num", 3)) != 3:
        raise doc.error("only 3-channel input is supported", *keys, "channel_num")
    if params.get("output_fp16", False):
        raise doc.error("float16 network input is not supported", *keys, "output_fp16")
    return {"op": "normalize", "scale": as_number(doc, params.get("scale", 1 / 255), *keys, "scale"),
            "mean": [as_number(doc, v, *keys, "mean") for v in params.get("mean", IMAGENET_MEAN)],
            "std": [as_number(doc, v, *keys, "std") for v in params.get("std", IMAGENET_STD)]}


def _to_chw(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    return {"op": "to_chw"}


TRANSFORMS: dict[str, Callable[[MetaDoc, dict[str, Any], int], dict[str, Any]]] = {
    "ResizeImage": _resize, "CropImage": _crop, "NormalizeImage": _normalize,
    "ToCHWImage": _to_chw,
}


def _preprocess(doc: MetaDoc) -> list[dict[str, Any]]:
    rgb, ops = True, []
    for name, params, index in as_ops(doc, doc.get(*KEYS), *KEYS):
        if name == "DecodeImage":   # not written by the exporter; when present it says the colour order
            rgb = bool((params or {}).get("to_rgb", True))
            continue
        if name not in TRANSFORMS:
            raise doc.error(f"transform '{name}' is not supported for deployment yet (known: DecodeImage, "
                            f"{', '.join(TRANSFORMS)})", *KEYS, index)
        ops.append(TRANSFORMS[name](doc, params or {}, index))
    if not ops or ops[-1]["op"] != "to_chw":
        raise doc.error("the transforms must end with ToCHWImage: the network takes CHW input", *KEYS)
    return [{"op": "color", "order": "rgb" if rgb else "bgr"}, *ops]


def _topk(doc: MetaDoc) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Topk settings and the key path they were found under (new and old export layouts)."""
    post = doc.get("PostProcess")
    if isinstance(post.get("Topk"), dict):
        return post["Topk"], ("PostProcess", "Topk")
    return post, ("PostProcess",)


def _labels(doc: MetaDoc, topk: dict[str, Any], keys: tuple[str, ...]) -> list[str] | None:
    listed = topk.get("label_list")
    if listed is not None:
        if not isinstance(listed, list) or not listed:
            raise doc.error("expected a non-empty list of class names", *keys, "label_list")
        return [str(v) for v in listed]
    # older exports name a class-id map file ("<id> <name>" per line) instead of inlining it
    named = topk.get("class_id_map_file")
    candidates = [doc.path.parent / Path(str(named)).name] if named else []
    candidates += [doc.path.parent / name for name in LABEL_MAP_FILES]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None     # the task then names classes by index
    lines = [ln.strip() for ln in found.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [ln.split(" ", 1)[1] if " " in ln and ln.split(" ", 1)[0].isdigit() else ln for ln in lines]


def _crop_shape(ops: list[dict[str, Any]]) -> list[int | None]:
    for op in reversed(ops):
        if op["op"] in ("center_crop", "resize"):
            return [None, 3, op["height"], op["width"]]
    return [None, 3, None, None]


def claims(doc: MetaDoc) -> bool:
    post = doc.get("PostProcess", default=None)
    return doc.path.name == "inference.yml" and isinstance(post, dict) and \
        (isinstance(post.get("Topk"), dict) or post.get("name") == "Topk")


def read(doc: MetaDoc) -> ModelSpec:
    ops = _preprocess(doc)
    topk, keys = _topk(doc)
    k = int(as_number(doc, topk.get("topk", 1), *keys, "topk"))
    if k < 1:
        raise doc.error("topk must be at least 1", *keys, "topk")
    spec = ModelSpec("classifier", "classification", export_name(doc),
                     TensorSpec(name="x", shape=_crop_shape(ops)), ops, {"kind": "topk", "topk": k},
                     _labels(doc, topk, keys))
    spec.metadata_path = doc.path
    return spec
