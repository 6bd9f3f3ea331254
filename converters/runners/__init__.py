"""Runners: where a candidate artifact is executed when it is judged (not where it will run on the device).

An ONNX model for this host runs in onnxruntime here; other artifacts run where this machine can run
them at all (an x86 twin in Paddle Lite's x86 runtime, a quantized program in Paddle Inference, an
aarch64 onnxruntime under qemu). Each says so in `description`, which goes into the manifest.
"""
from .base import InputInfo, Runner

__all__ = ["InputInfo", "Runner"]
