"""Prove the ONNX equals Paddle Inference on real images before anything else is built from it.

Both run the same real images through the model's own pre-processing; outputs are compared by
position (converted exports rename outputs). The bar is relative: max|diff| / max|reference|.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

from ..worker_call import call_paddle_worker
from .base import ModelFile, Pass, PassContext

RELATIVE_TOLERANCE = 1e-3


def _onnx_outputs(path, feeds: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return {key: session.run(None, {name: feed}) for key, feed in feeds.items()}


class PaddleParityPass(Pass):
    name = "paddle_parity"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        source = ctx.options["source"]
        if source.format == "onnx":
            return model
        images = ctx.options["val_images"][:2]
        preprocess = Preprocess(source.spec.preprocess)
        feeds = {f"image{i}": preprocess(read_image(p))[0] for i, p in enumerate(images)}
        inputs, outputs = ctx.workdir / f"{ctx.role}.parity_in.npz", ctx.workdir / f"{ctx.role}.parity_out.npz"
        np.savez(inputs, **feeds)
        call_paddle_worker("infer", f"{ctx.role} model: Paddle Inference reference", model=source.model_file,
                           params=source.params_file, inputs=inputs, out=outputs)
        reference = np.load(outputs)
        ours = _onnx_outputs(model.path, feeds)
        worst_abs, worst_rel = 0.0, 0.0
        for key, outs in ours.items():
            for index, out in enumerate(outs):
                ref = reference[f"{key}__{index}"]
                if ref.shape != out.shape:
                    raise ConversionError(f"{ctx.role} model: ONNX output {index} has shape {out.shape}, "
                                          f"Paddle gives {ref.shape}")
                diff = float(np.max(np.abs(ref.astype(np.float64) - out)))
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(ref))), 1e-12))
        report = {"images": len(feeds), "max_abs_diff": worst_abs, "max_rel_diff": worst_rel,
                  "tolerance_rel": RELATIVE_TOLERANCE}
        if worst_rel > RELATIVE_TOLERANCE:
            raise ConversionError(f"{ctx.role} model: ONNX differs from Paddle Inference on real images "
                                  f"(relative {worst_rel:.2e} > {RELATIVE_TOLERANCE:.0e})")
        ctx.progress(f"{ctx.role}: ONNX equals Paddle Inference (max |diff| {worst_abs:.1e} on {len(feeds)} images)")
        return ModelFile(model.path, model.format, model.precision, {**model.notes, "paddle_parity": report})
