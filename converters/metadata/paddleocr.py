"""PaddleOCR / PaddleX `inference.yml`: PP-OCR det (DB), cls (direction) and rec (CTC) models.

The exporter (`ppocr/utils/export_model.py::dump_infer_config`) writes the training config's
eval transforms and post-process. Runtime values it leaves out are PaddleOCR's inference defaults
(tools/infer/utility.py): det limit 960 on the long side, cls labels ['0', '180'] with 0.9, rec
drop_score 0.5, batches of 6.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runtimes.bundle import TensorSpec

from ..spec import ModelSpec
from .base import MetaDoc, as_number, as_ops

HALF = {"op": "normalize", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
DICT_FILE = "rec_dict.txt"


def _normalize_op(doc: MetaDoc, params: dict[str, Any], index: int) -> dict[str, Any]:
    keys = ("PreProcess", "transform_ops", index, "NormalizeImage")
    return {"op": "normalize",
            "scale": as_number(doc, params.get("scale", 1 / 255), *keys, "scale"),
            "mean": [as_number(doc, v, *keys, "mean") for v in params.get("mean", [0.485, 0.456, 0.406])],
            "std": [as_number(doc, v, *keys, "std") for v in params.get("std", [0.229, 0.224, 0.225])]}


def _det(doc: MetaDoc, ops: list, post: dict[str, Any]) -> ModelSpec:
    pre: list[dict[str, Any]] = []
    for name, params, index in ops:
        if name == "DetResizeForTest":
            params = params or {}
            pre.append({"op": "resize_limit", "limit_side_len": int(params.get("limit_side_len", 960)),
                        "limit_type": str(params.get("limit_type", "max"))})
        elif name == "NormalizeImage":
            pre.append(_normalize_op(doc, params, index))
        elif name == "ToCHWImage":
            pre.append({"op": "to_chw"})
    if not pre or pre[0]["op"] != "resize_limit":
        raise doc.error("a DB detection export needs DetResizeForTest among its transforms",
                        "PreProcess", "transform_ops")
    postprocess = {"kind": "db"}
    for key, default in (("thresh", 0.3), ("box_thresh", 0.6), ("max_candidates", 1000), ("unclip_ratio", 1.5)):
        postprocess[key] = as_number(doc, post.get(key, default), "PostProcess", key)
    postprocess["max_candidates"] = int(postprocess["max_candidates"])
    return ModelSpec("det", "ocr", doc.get("Global", "model_name", default="PP-OCR_det"),
                     TensorSpec(name="x", shape=[None, 3, None, None]), pre, postprocess)


def _line_model(doc: MetaDoc, ops: list, resize_op: str) -> tuple[int, int]:
    for name, params, index in ops:
        if name == resize_op:
            shape = params.get("image_shape")
            if not (isinstance(shape, list) and len(shape) == 3):
                raise doc.error("image_shape must be [channels, height, width]",
                                "PreProcess", "transform_ops", index, name, "image_shape")
            return int(shape[1]), int(shape[2])
    raise doc.error(f"a text-line export needs {resize_op} among its transforms", "PreProcess", "transform_ops")


def _line_pre(height: int, width: int) -> list[dict[str, Any]]:
    # RecResizeImg/ClsResizeImg normalise to [-1, 1] inside the op, then pad with zeros on the right.
    return [{"op": "rec_resize", "height": height, "width": width}, HALF, {"op": "to_chw"},
            {"op": "pad_width", "width": width}]


def _cls(doc: MetaDoc, ops: list, post: dict[str, Any]) -> ModelSpec:
    height, width = _line_model(doc, ops, "ClsResizeImg")
    labels = [str(v) for v in post.get("label_list", ["0", "180"])]
    return ModelSpec("cls", "ocr", doc.get("Global", "model_name", default="ppocr_direction_cls"),
                     TensorSpec(name="x", shape=[None, 3, height, width]), _line_pre(height, width),
                     {"kind": "cls", "thresh": 0.9, "batch_size": 6}, labels)


def _rec(doc: MetaDoc, ops: list, post: dict[str, Any]) -> ModelSpec:
    height, width = _line_model(doc, ops, "RecResizeImg")
    chars = post.get("character_dict")
    if isinstance(chars, list) and chars:
        text_lines = [str(c) for c in chars]
    else:
        dict_path = doc.get("Global", "character_dict_path", default=None) or post.get("character_dict_path")
        candidates = [doc.path.parent / Path(str(dict_path)).name] if dict_path else []
        candidates += sorted(doc.path.parent.glob("*keys*.txt")) + sorted(doc.path.parent.glob("*dict*.txt"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise doc.error("no character dictionary: neither an inline list nor a dictionary file beside "
                            "the export", "PostProcess", "character_dict")
        text_lines = found.read_text(encoding="utf-8").splitlines()
    spec = ModelSpec("rec", "ocr", doc.get("Global", "model_name", default="PP-OCR_rec"),
                     TensorSpec(name="x", shape=[None, 3, height, None]), _line_pre(height, width),
                     {"kind": "ctc", "character_dict": DICT_FILE, "use_space_char": True,
                      "batch_size": 6, "drop_score": 0.5})
    spec.files[DICT_FILE] = "\n".join(text_lines) + "\n"
    return spec


ROLE_BY_POSTPROCESS = {"DBPostProcess": _det, "ClsPostProcess": _cls, "CTCLabelDecode": _rec}


def claims(doc: MetaDoc) -> bool:
    return doc.path.name == "inference.yml" and doc.get("PostProcess", "name", default=None) in ROLE_BY_POSTPROCESS


def read(doc: MetaDoc) -> ModelSpec:
    post = doc.get("PostProcess")
    ops = as_ops(doc, doc.get("PreProcess", "transform_ops"), "PreProcess", "transform_ops")
    spec = ROLE_BY_POSTPROCESS[post["name"]](doc, ops, post)
    spec.metadata_path = doc.path
    return spec
