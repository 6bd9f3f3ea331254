"""What every artifact builder returns, and the check records they share."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from ..families.base import Evaluation
from ..package import BuiltArtifact
from ..passes.base import PassContext, host_arch


@dataclass
class BuildResult:
    artifact: BuiltArtifact | None
    reason: str
    # A check still running beside the next builds (emulation: one core for qemu while the other
    # calibrates); settle() waits for it and folds its verdict in.
    pending: Future | None = None

    def settle(self) -> "BuildResult":
        if self.pending is None or self.artifact is None:
            return self
        verdict, record = self.pending.result()
        self.artifact.checks.append(record)
        if verdict is not None and not verdict.passed:
            return BuildResult(None, f"refused: under emulation {verdict.describe()}")
        return BuildResult(self.artifact, f"{self.reason}; under emulation: "
                                          f"{verdict.describe() if verdict else 'not checked'}")


def target_name(ctx: PassContext) -> str:
    return "cuda" if ctx.target.accelerator == "cuda" else ctx.target.arch


def runs_here(ctx: PassContext) -> bool:
    """Can this host execute the target's artifact natively (and so time it)?"""
    return ctx.target.runs_on_host()


def onnxruntime_here() -> str:
    return f"onnxruntime {pkg_metadata.version('onnxruntime')} CPU on {host_arch()}"


def picture_names(images: list[Path]) -> list[str]:
    return [Path(p).name for p in images]


def check_record(executed: str, evaluation: Evaluation | None, ctx: PassContext,
                 not_executed: str | None = None, **details: Any) -> dict[str, Any]:
    """A runtimes.bundle.ArtifactCheck as a dict: what ran, the verdict, and on which pictures."""
    record: dict[str, Any] = {"executed": executed, "not_executed": not_executed,
                              "calibration_pictures": picture_names(ctx.options.get("calib_images", [])),
                              "validation_pictures": picture_names(ctx.options.get("val_images", [])),
                              "details": details}
    if evaluation is not None:
        record.update(metric=evaluation.metric, value=round(evaluation.value, 6), budget=evaluation.budget,
                      passed=evaluation.passed)
        record["details"] = {**details, "samples": evaluation.samples,
                             **{k: round(v, 6) for k, v in evaluation.extras.items()}}
    return record
