"""OpenVINO IR (`.xml` + `.bin`) from two front ends: the Paddle export itself and our optimised FP32 ONNX.

Which one OpenVINO runs faster differs per model (../shared/notes/openvino.md: PP-HumanSeg-Lite is faster
from our ONNX, PP-OCRv4 det and rec from the Paddle export), so both are made and the builders time them.

- Paddle front end: OpenVINO 2026.4 reads a legacy `.pdmodel`; a PIR `.json` it does not (read_model
  fails: "model format: .json is supported?", measured), so a PIR export goes through
  converters/passes/pir_to_legacy.py first, as for Paddle Lite. An ONNX source has no Paddle front end.
- Either IR keeps the FP32 reference's contract: its input shapes (a Paddle export may say less, e.g. a free
  batch where the reference fixes it) and its input/output names, by position, so the bundle's `outputs`
  and the tasks' input names hold for every artifact; except a free batch dimension of a model the tasks feed one
  image at a time, which becomes 1 (ONE_IMAGE_ROLES). The outputs are then compared by position with the
  FP32 reference on one real input (f32 execution); a front end whose outputs differ in number or shape is
  dropped with the reason.
- Weights are saved as f32 (`compress_to_fp16=False`; OpenVINO's default would store FP16 weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.errors import ConversionError

from ..latency import session
from ..runners.openvino import OpenVinoRunner
from .base import ModelFile, PassContext
from .pir_to_legacy import PirToLegacyPass

FRONT_ENDS = ("paddle", "onnx")
# Models the runtime tasks always feed one image at a time (runtimes/tasks: classifier, PicoDet detector, segmenter,
# OCR det; not OCR cls/rec nor pose, which run batches of lines/persons). A free batch dimension makes OpenVINO's CPU
# plugin pick shape-agnostic kernels: fixing it to 1 measured PP-LCNet bf16 3.81 -> 2.31 ms here.
ONE_IMAGE_ROLES = frozenset({"classifier", "detector", "segmenter", "det"})


@dataclass
class FrontEnd:
    name: str                       # "paddle" (the export) or "onnx" (our optimised FP32 ONNX)
    read_from: Path                 # the file OpenVINO read
    xml: Path | None = None         # the IR written, None when this front end failed
    reason: str = ""                # why it failed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.xml.with_suffix(".bin")


def ir_files(xml: Path) -> list[Path]:
    return [xml, xml.with_suffix(".bin")]


def _match_reference(model, reference: Path, role: str = "") -> None:
    """Give `model` (openvino.Model) the reference ONNX's input shapes and input/output names, by position; a
    free batch of a ONE_IMAGE_ROLES model becomes 1 (see ONE_IMAGE_ROLES)."""
    import onnx
    import openvino as ov
    ref = onnx.load(str(reference), load_external_data=False).graph
    weights = {t.name for t in ref.initializer}
    ref_inputs = [i for i in ref.input if i.name not in weights]
    if len(ref_inputs) != len(model.inputs) or len(ref.output) != len(model.outputs):
        raise ConversionError(f"{len(model.inputs)} inputs and {len(model.outputs)} outputs, the FP32 reference "
                              f"has {len(ref_inputs)} and {len(ref.output)}")
    shapes = {}
    for port, info in zip(model.inputs, ref_inputs):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]
        if role in ONE_IMAGE_ROLES and dims and dims[0] == -1:
            dims[0] = 1
        if port.get_partial_shape() != ov.PartialShape(dims):
            shapes[port] = ov.PartialShape(dims)
        port.get_tensor().set_names({info.name})
    if shapes:
        model.reshape(shapes)
    for port, info in zip(model.outputs, ref.output):
        port.get_tensor().set_names({info.name})


def outputs_vs_reference(xml: Path, reference: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """The IR (f32 execution) against the FP32 reference in onnxruntime, output by output on one input."""
    with OpenVinoRunner(xml, 1, "fp32") as runner:
        got = runner.run(None, feed)
    expected = session(reference, 1).run(None, feed)
    shapes = [(list(g.shape), list(e.shape)) for g, e in zip(got, expected) if g.shape != e.shape]
    if shapes:
        raise ConversionError(f"output shapes differ from the FP32 reference's (got, reference): {shapes}")
    worst = max((float(np.max(np.abs(g.astype(np.float64) - e))) for g, e in zip(got, expected) if e.size),
                default=0.0)
    return {"max_abs_diff_vs_fp32_onnx": worst, "outputs": len(got)}


def _paddle_program(ctx: PassContext) -> tuple[Path | None, str, dict[str, Any]]:
    source = ctx.options.get("source")
    if source is None or source.format == "onnx":
        return None, "the source is an ONNX file, not a Paddle export", {}
    try:
        program = PirToLegacyPass().run(ModelFile(source.model_file, source.format), ctx)
    except ConversionError as err:
        return None, f"no legacy program for OpenVINO's Paddle front end: {err}", {}
    p2l = program.notes.get("pir_to_legacy")
    details = {"pir_to_legacy": {k: p2l[k] for k in ("route", "weights_equal", "max_abs_diff")}} if p2l else {}
    return program.path, "", details


def build_front_ends(fp32: ModelFile, ctx: PassContext, feed: dict[str, np.ndarray]) -> list[FrontEnd]:
    """Both IRs in `<workdir>/<role>.openvino/`; a failed front end carries its reason instead of a file."""
    import openvino as ov
    folder = ctx.workdir / f"{ctx.role}.openvino"
    folder.mkdir(parents=True, exist_ok=True)
    program, why_not, program_details = _paddle_program(ctx)
    ends = [FrontEnd("paddle", program or Path(), reason=why_not, details=program_details),
            FrontEnd("onnx", fp32.path)]
    for end in ends:
        if end.reason:
            continue
        xml = folder / f"{end.name}.f32.xml"
        try:
            model = ov.Core().read_model(str(end.read_from))
            _match_reference(model, fp32.path, ctx.role)
            ov.save_model(model, str(xml), compress_to_fp16=False)
            end.details.update(outputs_vs_reference(xml, fp32.path, feed))
            end.xml = xml
        except (ConversionError, RuntimeError) as err:     # OpenVINO raises RuntimeError subclasses
            end.reason = f"OpenVINO's {end.name} front end: {str(err).splitlines()[0][:300]}"
        ctx.progress(f"{ctx.role}: OpenVINO IR from the {end.name} front end: "
                     f"{end.reason or 'max |diff| vs FP32 ONNX %.1e' % end.details['max_abs_diff_vs_fp32_onnx']}")
    return ends
