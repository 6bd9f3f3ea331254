"""Artifact builders, one per (format, precision) a profile may ask for, in one table.

A builder turns the FP32 reference into one artifact and says whether it earned its place
(`BuildResult.artifact` is None when it was refused, with the measured reason).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from device_profiles import ArtifactChoice, Profile
from runtimes.errors import UnsupportedTargetError

from .package import BuiltArtifact
from .passes.base import ModelFile, PassContext
from .passes.quantize import QuantizePass


@dataclass
class BuildResult:
    artifact: BuiltArtifact | None
    reason: str


def _target_name(ctx: PassContext) -> str:
    return "cuda" if ctx.target.accelerator == "cuda" else ctx.target.arch


def build_onnx_fp32(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    parity = fp32.notes.get("paddle_parity", {})
    metrics = {"paddle_max_abs_diff": parity["max_abs_diff"]} if parity else {}
    reason = ("the FP32 reference" + (f", equal to Paddle Inference (max |diff| {parity['max_abs_diff']:.1e})"
                                      if parity else ""))
    return BuildResult(BuiltArtifact(fp32.path, "onnx", "fp32", None, _target_name(ctx), metrics), reason)


def build_onnx_int8(fp32: ModelFile, ctx: PassContext) -> BuildResult:
    result = QuantizePass().run(fp32, ctx)
    report = result.notes["quantize"]
    if not report["accepted"]:
        return BuildResult(None, f"refused: {report['reason']}")
    metrics = {report["metric"]: report["value"], **report.get("extras", {}), "latency_ratio": report["latency_ratio"]}
    metrics.update({f"latency_ms_{k}": v for k, v in report.get("latency_ms", {}).items()})
    return BuildResult(BuiltArtifact(result.path, "onnx", "int8", ctx.target.quantization, _target_name(ctx),
                                     metrics, list(report.get("fp32_nodes", [])),
                                     list(report.get("channel_groups", []))), report["reason"])


BUILDERS: dict[tuple[str, str], Callable[[ModelFile, PassContext], BuildResult]] = {
    ("onnx", "fp32"): build_onnx_fp32,
    ("onnx", "int8"): build_onnx_int8,
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
