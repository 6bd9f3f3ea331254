"""PaddleDetection `infer_cfg.yml`: PP-PicoDet detectors and PP-TinyPose (HRNet) keypoint models.

The exporter (`ppdet/engine/export_utils.py::_dump_infer_config`) writes the TestReader's sample
transforms after DecodeImage (`Preprocess`, `- type: Name` items), the dataset's `label_list`,
`draw_threshold` and `arch`. For PicoDet it adds the head's `NMS` block and `fpn_stride`; `arch`
stays `PicoDet` for exports without post-processing in the network (raw head: score maps + DFL box
logits per stride) and becomes `GFL` for exports with it. PaddleDetection's deploy code decodes
images to RGB before these transforms, so the chain starts with `color`.
"""
from __future__ import annotations

from typing import Any, Callable

from runtimes.bundle import TensorSpec

from ..spec import ModelSpec
from .base import MetaDoc, as_number, as_ops, export_name

KEYS = ("Preprocess",)
# `interp` is an OpenCV interpolation code (the exporter writes 1, cv2.INTER_LINEAR, when unset)
INTERP_CODES = {0: "nearest", 1: "linear", 2: "cubic", 3: "area", 4: "lanczos"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# PicoDet's head defaults, used when an export leaves a key of its NMS block out
NMS_DEFAULTS = {"score_threshold": 0.3, "nms_threshold": 0.5, "nms_top_k": 1000, "keep_top_k": 100}


def _int_pair(doc: MetaDoc, value: Any, *keys: Any) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, list) and len(value) == 2:
        return int(as_number(doc, value[0], *keys, 0)), int(as_number(doc, value[1], *keys, 1))
    raise doc.error(f"expected a size or a pair of sizes, found {value!r}", *keys)


def _interp(doc: MetaDoc, params: dict[str, Any], *keys: Any) -> str:
    code = params.get("interp", 1)
    if not isinstance(code, int) or code not in INTERP_CODES:
        raise doc.error(f"unknown OpenCV interpolation code {code!r} (known: "
                        f"{', '.join(f'{k} {v}' for k, v in INTERP_CODES.items())})", *keys, "interp")
    return INTERP_CODES[code]


def _resize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index)
    height, width = _int_pair(doc, doc.get(*keys, "target_size"), *keys, "target_size")   # [h, w]
    interp = _interp(doc, params, *keys)
    if params.get("keep_ratio", True):   # the deploy Resize's default
        return {"op": "resize_short_long", "short": min(height, width), "long": max(height, width),
                "interp": interp}
    return {"op": "resize", "width": width, "height": height, "interp": interp}


def _normalize(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index)
    scale = 1 / 255 if params.get("is_scale", True) else 1.0
    norm_type = str(params.get("norm_type", "mean_std"))
    if norm_type == "none":
        return {"op": "normalize", "scale": scale}
    if norm_type != "mean_std":
        raise doc.error(f"unknown norm_type '{norm_type}' (known: mean_std, none)", *keys, "norm_type")
    return {"op": "normalize", "scale": scale,
            "mean": [as_number(doc, v, *keys, "mean") for v in params.get("mean", IMAGENET_MEAN)],
            "std": [as_number(doc, v, *keys, "std") for v in params.get("std", IMAGENET_STD)]}


def _permute(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    return {"op": "to_chw"}


def _pad_stride(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any] | None:
    stride = int(as_number(doc, params.get("stride", 0), *KEYS, index, "stride"))
    return {"op": "pad_stride", "stride": stride} if stride > 0 else None   # stride 0: no padding


def _top_down_affine(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = (*KEYS, index)
    if params.get("use_udp", False):
        raise doc.error("TopDownEvalAffine with use_udp is not supported yet", *keys, "use_udp")
    width, height = _int_pair(doc, doc.get(*keys, "trainsize"), *keys, "trainsize")   # [w, h]
    return {"op": "top_down_affine", "width": width, "height": height}


TRANSFORMS: dict[str, Callable[[MetaDoc, dict[str, Any], int], dict[str, Any] | None]] = {
    "Resize": _resize, "NormalizeImage": _normalize, "Permute": _permute, "PadStride": _pad_stride,
    "TopDownEvalAffine": _top_down_affine,
}


def _preprocess(doc: MetaDoc) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [{"op": "color", "order": "rgb"}]
    for name, params, index in as_ops(doc, doc.get(*KEYS), *KEYS):
        if name not in TRANSFORMS:
            raise doc.error(f"transform '{name}' is not supported for deployment yet (known: "
                            f"{', '.join(TRANSFORMS)})", *KEYS, index)
        op = TRANSFORMS[name](doc, params or {}, index)
        if op is not None:
            ops.append(op)
    names = [op["op"] for op in ops]
    if "to_chw" not in names:
        raise doc.error("no Permute among the transforms: the network takes CHW input", *KEYS)
    if "pad_stride" in names and names.index("pad_stride") < names.index("to_chw"):
        raise doc.error("PadStride comes before Permute; PaddleDetection pads the CHW tensor", *KEYS)
    return ops


def _input_shape(doc: MetaDoc, ops: list[dict[str, Any]]) -> list[int | None]:
    """A fixed [1, 3, h, w] when the export traced one size, else [1, 3, None, None]."""
    if not doc.get("use_dynamic_shape", default=False):
        for op in ops:
            if op["op"] == "resize" or op["op"] == "top_down_affine":
                return [1, 3, op["height"], op["width"]]
    return [1, 3, None, None]


def _labels(doc: MetaDoc) -> list[str]:
    labels = doc.get("label_list")
    if not isinstance(labels, list) or not labels:
        raise doc.error("expected a non-empty list of class names", "label_list")
    return [str(v) for v in labels]


def _nms(doc: MetaDoc) -> dict[str, Any]:
    block = doc.get("NMS", default={}) or {}
    if not isinstance(block, dict):
        raise doc.error("expected a mapping of NMS settings", "NMS")
    values: dict[str, Any] = {}
    for key, default in NMS_DEFAULTS.items():
        value = as_number(doc, block.get(key, default), "NMS", key)
        values[key] = int(value) if key.endswith("top_k") else value
    return values


def _detector(doc: MetaDoc, arch: str) -> ModelSpec:
    ops = _preprocess(doc)
    strides = doc.get("fpn_stride", default=None)
    if strides is None and arch == "PicoDet":
        raise doc.error("a PicoDet export without post-processing needs fpn_stride (the strides of its "
                        "score maps); re-export it, the exporter writes them", "fpn_stride")
    if strides is not None and not (isinstance(strides, list) and strides):
        raise doc.error("expected a list of strides", "fpn_stride")
    postprocess = {"kind": "detection",
                   "fpn_stride": [int(as_number(doc, s, "fpn_stride", i)) for i, s in enumerate(strides or [])],
                   **_nms(doc),
                   "draw_threshold": as_number(doc, doc.get("draw_threshold", default=0.5), "draw_threshold")}
    tensor = TensorSpec(name="image", shape=_input_shape(doc, ops))
    return ModelSpec("detector", "detection", export_name(doc), tensor, ops, postprocess, _labels(doc))


def _pose(doc: MetaDoc, arch: str) -> ModelSpec:
    ops = _preprocess(doc)
    if ops[1]["op"] != "top_down_affine":
        raise doc.error("a top-down keypoint export starts with TopDownEvalAffine", *KEYS, 0)
    # PaddleDetection's deploy HRNetPostProcess refines heatmap peaks with DARK by default
    postprocess = {"kind": "heatmaps", "use_dark": True,
                   "draw_threshold": as_number(doc, doc.get("draw_threshold", default=0.5), "draw_threshold")}
    tensor = TensorSpec(name="image", shape=_input_shape(doc, ops))
    return ModelSpec("pose", "keypoints", export_name(doc), tensor, ops, postprocess, _labels(doc))


ARCHS: dict[str, Callable[[MetaDoc, str], ModelSpec]] = {"PicoDet": _detector, "GFL": _detector, "HRNet": _pose}


def claims(doc: MetaDoc) -> bool:
    return doc.path.name == "infer_cfg.yml" and "arch" in doc.data


def read(doc: MetaDoc) -> ModelSpec:
    arch = str(doc.get("arch"))
    if arch not in ARCHS:
        raise doc.error(f"PaddleDetection arch '{arch}' is not supported yet (supported: {', '.join(ARCHS)})",
                        "arch")
    spec = ARCHS[arch](doc, arch)
    spec.metadata_path = doc.path
    return spec
