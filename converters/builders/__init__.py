"""Artifact builders, one per (format, precision) a profile may ask for, in one table.

A builder turns the FP32 reference (and, for Paddle Lite, the Paddle program it came from) into one
artifact and says whether it earned its place (`BuildResult.artifact` is None when it was refused,
with the measured reason). Every artifact carries `checks`: how it was proven here and what this
host could not execute.
"""
from __future__ import annotations

from typing import Callable

import onnx

from device_profiles import ArtifactChoice, Profile
from runtimes.errors import UnsupportedTargetError

from ..passes.base import ModelFile, PassContext
from .base import BuildResult
from .onnx_fp16 import build_onnx_fp16
from .onnx_fp32 import build_onnx_fp32
from .onnx_int8 import build_onnx_int8
from .openvino_fp import build_openvino_bf16, build_openvino_fp32
from .openvino_int8 import build_openvino_int8
from .paddle_lite_fp import build_paddle_lite_fp16, build_paddle_lite_fp32
from .paddle_lite_int8 import build_paddle_lite_int8

Builder = Callable[[ModelFile, PassContext], BuildResult]
BUILDERS: dict[tuple[str, str], Builder] = {
    ("onnx", "fp32"): build_onnx_fp32,
    ("onnx", "fp16"): build_onnx_fp16,
    ("onnx", "int8"): build_onnx_int8,
    ("paddle_lite", "fp32"): build_paddle_lite_fp32,
    ("paddle_lite", "fp16"): build_paddle_lite_fp16,
    ("paddle_lite", "int8"): build_paddle_lite_int8,
    ("openvino", "fp32"): build_openvino_fp32,
    ("openvino", "bf16"): build_openvino_bf16,
    ("openvino", "int8"): build_openvino_int8,
}


def check_buildable(profile: Profile) -> None:
    """Refuse up front, naming the artifact, rather than after minutes of work."""
    missing = [c for c in profile.artifacts if (c.format, c.precision) not in BUILDERS]
    if missing:
        can = ", ".join(f"{f} {p}" for f, p in BUILDERS)
        raise UnsupportedTargetError(
            f"profile {profile.name} asks for {', '.join(c.label() for c in missing)}, which this edge cannot "
            f"build yet (it builds: {can}); use a profile without it or edit a copy of the profile")


def build(choice: ArtifactChoice, fp32: ModelFile, ctx: PassContext) -> BuildResult:
    return BUILDERS[(choice.format, choice.precision)](fp32, ctx)


def output_names(path) -> list[str]:
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


__all__ = ["BUILDERS", "BuildResult", "build", "check_buildable", "output_names"]
