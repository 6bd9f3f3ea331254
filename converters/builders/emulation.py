"""Executing an aarch64 ONNX artifact under qemu user emulation, as the target's CPU model, and judging it.

Used by the ONNX builders when the target is not this host's architecture. The emulator root is
provisioned by `edge toolchain install arm-emulator` (or by `edge convert` on first use), never here.
"""
from __future__ import annotations

import math
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from runtimes.errors import ConversionError

from ..families.base import Evaluation
from ..passes.base import PassContext

EMULATED_ARCHS = {"aarch64"}
# Emulated work per artifact, in input elements (emulated time follows them; measured CPU-s per input at
# 1 emulated thread, FP32: OCR rec 6x48x320 22.9, OCR det 960x608 18.1, PicoDet 320^2 2.2, LCNet 1.0).
# Pictures over the budget are judged on x86 only, and the record names them. INT8 runs 3-4x faster
# under emulation and gets 3x the budget; the FP32 artifact is the x86 reference file itself.
ROLE_BUDGETS = {"rec": 4 * 6 * 3 * 48 * 320, "det": 3 * 3 * 960 * 608}
STANDARD_INPUTS = 16
INT8_FACTOR = 3


def element_budget(ctx: PassContext) -> int:
    if ctx.role in ROLE_BUDGETS:
        budget = ROLE_BUDGETS[ctx.role]
    else:
        shape = ctx.options["source"].spec.input.shape[1:]
        budget = STANDARD_INPUTS * math.prod(d if d else 320 for d in shape)
    return budget * (INT8_FACTOR if ctx.target.precision == "int8" else 1)


def emulated_check(artifact: Path, ctx: PassContext) -> tuple[Evaluation | None, dict[str, Any]]:
    from ..checks.emulated import check_under_emulation

    if ctx.target.arch not in EMULATED_ARCHS:
        raise ConversionError(f"{ctx.role}: no emulator for {ctx.target.arch} artifacts on this host")
    if not ctx.target.cpu:
        raise ConversionError(f"profile {ctx.target.profile}: names no 'cpu' model to emulate (e.g. cortex-a72)")
    evaluation, record = check_under_emulation(ctx.options["family"], ctx.role, ctx.options["fp32_models"],
                                               artifact, ctx.options["val_images"], ctx.target.cpu,
                                               max_elements=element_budget(ctx))
    record.setdefault("calibration_pictures", [Path(p).name for p in ctx.options.get("calib_images", [])])
    record.setdefault("validation_pictures", [Path(p).name for p in ctx.options.get("val_images", [])])
    ctx.progress(f"{ctx.role}: under emulation ({ctx.target.cpu}): {evaluation.describe()}")
    return evaluation, record


def emulated_check_later(artifact: Path, ctx: PassContext) -> Future:
    """emulated_check() on the pipeline's check pool (ctx.options["check_pool"]), so the emulator's core
    works while the builds go on; without a pool, now. The future gives (verdict, record)."""
    pool = ctx.options.get("check_pool")
    if pool is not None:
        return pool.submit(emulated_check, artifact, ctx)
    done: Future = Future()
    done.set_result(emulated_check(artifact, ctx))
    return done
