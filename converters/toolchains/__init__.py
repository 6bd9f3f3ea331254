"""Tools edge provisions for conversion and checking, by name (`edge toolchain install NAME`)."""
from __future__ import annotations

import importlib

from .base import Toolchain, ToolchainError, ToolchainStatus

# name -> module.Class, imported on use (each module may pull in what only it needs)
TOOLCHAINS = {"paddle-lite": "paddle_lite.PaddleLiteToolchain", "arm-emulator": "arm_emulator.ArmEmulatorToolchain"}


def needed_by(profile) -> list[str]:
    """The toolchains a device profile's artifacts need on this host (device_profiles.Profile)."""
    from ..passes.base import host_arch

    needed = []
    if any(a.format == "paddle_lite" for a in profile.artifacts):
        needed.append("paddle-lite")            # opt, and the x86 runtime that runs the twins
    if profile.arch == "aarch64" and profile.accelerator == "cpu" and host_arch() != "aarch64" \
            and any(a.format == "onnx" for a in profile.artifacts):
        needed.append("arm-emulator")           # every ARM ONNX artifact is executed under emulation
    return needed


def toolchain(name: str, progress=lambda message: None) -> Toolchain:
    if name not in TOOLCHAINS:
        raise ToolchainError(f"unknown toolchain '{name}' (known: {', '.join(TOOLCHAINS)})")
    module, cls = TOOLCHAINS[name].split(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(progress)


__all__ = ["TOOLCHAINS", "needed_by", "Toolchain", "ToolchainError", "ToolchainStatus", "toolchain"]
