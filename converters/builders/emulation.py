"""Executing an aarch64 ONNX artifact under qemu user emulation, as the target's CPU model, and judging it.

Used by the ONNX builders when the target is not this host's architecture. The emulator root is
provisioned by `edge toolchain install arm-emulator` (or by `edge convert` on first use), never here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runtimes.errors import ConversionError

from ..families.base import Evaluation
from ..passes.base import PassContext

EMULATED_ARCHS = {"aarch64"}


def emulated_check(artifact: Path, ctx: PassContext) -> tuple[Evaluation | None, dict[str, Any]]:
    from ..checks.emulated import check_under_emulation

    if ctx.target.arch not in EMULATED_ARCHS:
        raise ConversionError(f"{ctx.role}: no emulator for {ctx.target.arch} artifacts on this host")
    if not ctx.target.cpu:
        raise ConversionError(f"profile {ctx.target.profile}: names no 'cpu' model to emulate (e.g. cortex-a72)")
    evaluation, record = check_under_emulation(ctx.options["family"], ctx.role, ctx.options["fp32_models"],
                                               artifact, ctx.options["val_images"], ctx.target.cpu)
    record.setdefault("calibration_pictures", [Path(p).name for p in ctx.options.get("calib_images", [])])
    record.setdefault("validation_pictures", [Path(p).name for p in ctx.options.get("val_images", [])])
    ctx.progress(f"{ctx.role}: under emulation ({ctx.target.cpu}): {evaluation.describe()}")
    return evaluation, record
