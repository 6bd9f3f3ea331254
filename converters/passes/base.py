"""The one contract every conversion pass fulfils (after Olive's passes).

A pass takes a model file and the context, writes its output into its own work folder and returns
the new model file. "What it targets" (`Target`, frozen, from the profile) is kept apart from
"where it runs" (the conversion host, which is just this process).
"""
from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtimes.bundle import RuntimeOptions


@dataclass(frozen=True)
class Target:
    """What an artifact is built for: one entry of a profile's `artifacts` list plus the device facts."""
    profile: str
    arch: str                      # x86_64 / aarch64
    accelerator: str               # cpu / cuda
    format: str                    # onnx / paddle_lite
    precision: str                 # fp32 / fp16 / int8
    quantization: str | None = None   # scheme name, e.g. "qdq-u8s8"
    opset: int = 13
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    cpu: str | None = None                 # CPU model of the device (cortex-a72): what an emulator imitates
    cpu_features: tuple[str, ...] = ()
    paddle_lite_targets: tuple[str, ...] = ()   # Paddle Lite `opt --valid_targets`

    def runs_on_host(self) -> bool:
        """Can the conversion host execute this target's artifacts natively, and so time them?"""
        return self.accelerator == "cpu" and self.arch == host_arch()


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@dataclass
class ModelFile:
    """A model as it moves through the passes."""
    path: Path
    format: str                    # paddle-legacy / paddle-pir / onnx / paddle_lite
    precision: str = "fp32"
    notes: dict[str, Any] = field(default_factory=dict)   # what passes measured or decided


@dataclass
class PassContext:
    workdir: Path
    target: Target
    role: str
    progress: Callable[[str], None] = lambda message: None
    options: dict[str, Any] = field(default_factory=dict)


class Pass(ABC):
    """One step of conversion. Subclasses set `name` and are listed in `converters.passes.PASSES`."""

    name: str = ""

    @abstractmethod
    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        """Return the transformed model (a new file under ctx.workdir); raise ConversionError on failure."""
