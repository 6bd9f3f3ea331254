"""Paddle 3 PIR program (`.json`) -> legacy program (`.pdmodel`), weights unchanged, proven equal.

Why: Paddle Lite's `opt` reads only legacy ProgramDesc programs; on a PIR `.json` it aborts (rc 134,
"idx >= blocks.size()"). Paddle 3.3.1 has no PIR -> ProgramDesc translator, and `paddle.jit.save` of
a loaded PIR model writes PIR again even under FLAGS_enable_pir_api=0, so converters/pir_legacy
writes the legacy operators itself, op by op (rules.py), in a child process.

Interface (for any builder that needs a legacy program):
    legacy = PirToLegacyPass().run(ModelFile(program, "paddle-pir"), ctx)
  - in: a PIR program whose weights sit beside it with the same stem (`inference.json` +
    `inference.pdiparams`, as every Paddle exporter writes them). A "paddle-legacy" model is returned
    as it is, so callers can call this unconditionally; an "onnx" model raises ConversionError.
  - ctx: `ctx.options["source"]` (its `spec.preprocess` makes the check's inputs) and
    `ctx.options["val_images"]` (the first two are the check's real images); `ctx.workdir`, `ctx.role`.
  - out: ModelFile(`<workdir>/<role>.pir2legacy/<stem>.pdmodel`, "paddle-legacy"); the weights are
    `<stem>.pdiparams` beside it. notes["pir_to_legacy"] says what was done and measured: weights
    equal as "bytes" or "values", the legacy outputs' max abs/rel difference from the PIR program's
    in Paddle Inference on the real images (refused above 1e-5 relative), the legacy operator types.
  - A second call on the same PIR files in the same workdir reuses the proven result.
Failures (an operation without a legacy rule, control flow, a difference) are one ConversionError line.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

from ..worker_call import call_paddle_worker
from .base import ModelFile, Pass, PassContext

ROUTE = ("PIR program walked op by op and written as legacy operators (converters/pir_legacy), "
         "weights saved from the same tensors")


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _check_inputs(ctx: PassContext, out: Path) -> Path:
    source, images = ctx.options.get("source"), ctx.options.get("val_images") or []
    if source is None or not images:
        raise ConversionError(f"{ctx.role} model: the PIR -> legacy check needs the export's metadata and "
                              "real pictures (ctx.options 'source' and 'val_images')")
    preprocess = Preprocess(source.spec.preprocess)
    np.savez(out, **{f"image{i}": preprocess(read_image(p))[0] for i, p in enumerate(images[:2])})
    return out


class PirToLegacyPass(Pass):
    name = "pir_to_legacy"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if model.format == "paddle-legacy":
            return model
        if model.format != "paddle-pir":
            raise ConversionError(f"{ctx.role} model: {model.path.name} is {model.format}, not a Paddle program; "
                                  "a legacy Paddle program can only come from a Paddle export")
        params = model.path.with_suffix(".pdiparams")
        if not params.is_file():
            raise ConversionError(f"{ctx.role} model: no {params.name} beside {model.path.name}")
        folder = ctx.workdir / f"{ctx.role}.pir2legacy"
        stem = folder / model.path.stem
        verdict_file = folder / "verdict.json"
        digest = _digest(model.path, params)
        if verdict_file.is_file() and stem.with_suffix(".pdmodel").is_file():
            verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
            if verdict.get("source_sha256") == digest:
                return ModelFile(stem.with_suffix(".pdmodel"), "paddle-legacy", model.precision,
                                 {**model.notes, "pir_to_legacy": verdict})
        folder.mkdir(parents=True, exist_ok=True)
        inputs = _check_inputs(ctx, folder / "check_inputs.npz")
        ctx.progress(f"{ctx.role}: PIR program -> legacy program for Paddle Lite")
        started = time.monotonic()
        report = call_paddle_worker("pir-to-legacy", f"{ctx.role} model: PIR -> legacy program",
                                    module="converters.pir_legacy.worker", model=model.path, params=params,
                                    out=stem, inputs=inputs)
        report.pop("ok", None)
        verdict = {"route": ROUTE, "from": model.path.name, "source_sha256": digest,
                   "seconds": round(time.monotonic() - started, 1), **report}
        verdict_file.write_text(json.dumps(verdict, indent=1), encoding="utf-8")
        ctx.progress(f"{ctx.role}: legacy program equals the PIR one (weights equal as {report['weights_equal']}, "
                     f"outputs max |diff| {report['max_abs_diff']:.1e} on {report['inputs_compared']} images)")
        return ModelFile(stem.with_suffix(".pdmodel"), "paddle-legacy", model.precision,
                         {**model.notes, "pir_to_legacy": verdict})
