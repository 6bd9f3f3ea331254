"""Prove the ONNX equals Paddle Inference on real images before anything else is built from it.

Both run the same real images through the model's own pre-processing; outputs are compared by
position (converted exports rename outputs). The bar is relative: max|diff| / max|reference|.
Every input the program declares is fed, by name: PaddleDetection exports with post-processing also
take `scale_factor` (and some `im_shape`); they get the picture's real resize ratio, so the box
rescaling inside the network is compared too, not only the image branch.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from runtimes.errors import BundleError, ConversionError
from runtimes.image import read_image
from runtimes.tasks.detection import AUX_INPUTS, image_input
from runtimes.tasks.preprocess import Frame, Preprocess

from ..runners.paddle_inference import PaddleInferenceRunner
from .base import ModelFile, Pass, PassContext

RELATIVE_TOLERANCE = 1e-3
# An output that is all but zero on a picture (PP-OCRv4 det's text map on a photo with no text: max 5e-7) is
# compared against at least this scale, i.e. in absolute terms (1e-5 at the tolerance): measured relative to its
# own maximum, coco_dog.jpg's |diff| of 9.1e-8 read as 0.18 and refused a correct conversion.
REFERENCE_SCALE_FLOOR = 1e-2


def model_feeds(names: list[str], tensor: np.ndarray, frame: Frame) -> dict[str, np.ndarray]:
    """The image batch under its own name, plus the auxiliary inputs a detection export declares."""
    if len(names) == 1:
        return {names[0]: tensor}
    try:
        image = image_input(names)
    except BundleError as err:
        raise ConversionError(f"cannot feed the inputs {names} for the parity check: {err}") from None
    feeds = {name: AUX_INPUTS[name](tensor) for name in names if name != image}
    if "scale_factor" in feeds:            # resized / original, [y, x], as PaddleDetection's reader gives it
        feeds["scale_factor"] = np.array([[frame.scale_xy[1], frame.scale_xy[0]]], np.float32)
    return {image: tensor, **feeds}


def _onnx_session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(reference: list[np.ndarray], ours: list[np.ndarray], role: str) -> tuple[float, float]:
    """(max |diff|, max |diff| / max(max |reference|, REFERENCE_SCALE_FLOOR)) over the outputs, by position."""
    if len(reference) != len(ours):
        raise ConversionError(f"{role} model: ONNX gives {len(ours)} outputs, Paddle {len(reference)}")
    worst_abs, worst_rel = 0.0, 0.0
    for index, (ref, out) in enumerate(zip(reference, ours)):
        if ref.shape != out.shape:
            raise ConversionError(f"{role} model: ONNX output {index} has shape {out.shape}, Paddle gives {ref.shape}")
        if ref.size == 0:
            continue
        diff = float(np.max(np.abs(ref.astype(np.float64) - out)))
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(ref))), REFERENCE_SCALE_FLOOR))
    return worst_abs, worst_rel


class PaddleParityPass(Pass):
    name = "paddle_parity"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        source = ctx.options["source"]
        if source.format == "onnx":
            return model
        images = ctx.options["val_images"][:2]
        preprocess = Preprocess(source.spec.preprocess)
        session = _onnx_session(model.path)
        onnx_names = [i.name for i in session.get_inputs()]
        paddle = PaddleInferenceRunner(source.model_file, source.params_file)
        try:
            paddle_names = [i.name for i in paddle.get_inputs()]
            if sorted(paddle_names) != sorted(onnx_names):
                raise ConversionError(f"{ctx.role} model: ONNX inputs {onnx_names} differ from Paddle's {paddle_names}")
            worst_abs, worst_rel = 0.0, 0.0
            for path in images:
                tensor, frame = preprocess(read_image(path))
                feeds = model_feeds(onnx_names, tensor, frame)
                diff_abs, diff_rel = compare(paddle.run(None, feeds), session.run(None, feeds), ctx.role)
                worst_abs, worst_rel = max(worst_abs, diff_abs), max(worst_rel, diff_rel)
        finally:
            paddle.close()
        inputs = ", ".join(onnx_names)
        report = {"images": len(images), "inputs": onnx_names, "max_abs_diff": worst_abs, "max_rel_diff": worst_rel,
                  "tolerance_rel": RELATIVE_TOLERANCE}
        if worst_rel > RELATIVE_TOLERANCE:
            raise ConversionError(f"{ctx.role} model: ONNX differs from Paddle Inference on real images "
                                  f"(relative {worst_rel:.2e} > {RELATIVE_TOLERANCE:.0e}, inputs {inputs})")
        ctx.progress(f"{ctx.role}: ONNX equals Paddle Inference (max |diff| {worst_abs:.1e} on {len(images)} images, "
                     f"inputs {inputs})")
        return ModelFile(model.path, model.format, model.precision, {**model.notes, "paddle_parity": report})
