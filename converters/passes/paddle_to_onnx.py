"""Paddle inference export (legacy .pdmodel or PIR .json) -> ONNX with paddle2onnx.

paddle2onnx 2.1.0 with paddle 3.3.1 fails on every model with an interpolate op (PP-OCRv4 det,
PicoDet, TinyPose) because the PIR translator stores `scale` as f64; the worker rewrites those
attributes to f32 before export. Other faults of its output are mended by the repair pass.
"""
from __future__ import annotations

from runtimes.errors import ConversionError

from ..worker_call import call_paddle_worker
from .base import ModelFile, Pass, PassContext


class PaddleToOnnxPass(Pass):
    name = "paddle_to_onnx"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if model.format == "onnx":
            return model
        params = ctx.options.get("params_file")
        if params is None:
            raise ConversionError(f"{ctx.role} model: no .pdiparams beside {model.path.name}")
        out = ctx.workdir / f"{ctx.role}.paddle2onnx.onnx"
        report = call_paddle_worker("to-onnx", f"{ctx.role} model ({model.path.name})",
                                    model=model.path, params=params, out=out, opset=ctx.target.opset)
        report.pop("ok", None)
        return ModelFile(out, "onnx", "fp32", {**model.notes, "paddle_to_onnx": report})
